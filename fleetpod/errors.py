"""What fleet-pod refuses or fails at, as exceptions whose message names the cause.

The CLI prints the message and exits 254 (rkt's code for any stage0 error). A refused image or
key leaves nothing behind in the store or the trust store; a pod whose launch fails after it was
made is left `aborted-prepare` (or `exited`) for `fleet-pod gc` or `rm`.
"""

from __future__ import annotations


class PodError(Exception):
    """A refusal or failure of fleet-pod; `str()` is the message for the user."""


class ImageError(PodError):
    """An image that is malformed: its archive, a member, or its manifest."""


class TrustError(PodError):
    """A signature that is missing, malformed, invalid or made by a key not trusted for the name."""


class StoreError(PodError):
    """The store cannot do what was asked: no such image, an ambiguous id, a busy image."""


class PodStateError(PodError):
    """A pod that is not in a state that allows the operation (or does not exist)."""
