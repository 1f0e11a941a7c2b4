"""The app's ASGI middlewares (`fleetd.api.app` stacks them; its docstring gives the order).

* `ServerHeader`: `Server: fleetd/<version>` on every response but a 503 (as fleet);
* `LastResort`: an exception nothing else handled is logged and answered with a 500 in fleet's
  envelope (never Starlette's plain-text page), unless the response had already begun;
* `BearerToken`: every request but those to `OPEN_PATHS` needs `Authorization: Bearer <token>`,
  else 401;
* `BodyLimit`: a declared `Content-Length` over the limit is refused before the app runs, and a
  streamed body is counted as it is read; either way a 413.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetd import __version__
from fleetd.api.errors import BodyTooLarge, Unauthorized, response_for

SERVER_HEADER: Final = f"fleetd/{__version__}"
OPEN_PATHS: Final = frozenset({"/healthz"})


class LastResort:
    """A 500 in fleet's envelope for any exception that reached the outside of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as error:
            if started:  # too late for a status: let the server cut the connection
                raise
            response = response_for(error)  # logs it, with its traceback
            await response(scope, receive, send)


class ServerHeader:
    """`Server: fleetd/<version>` on every response except a 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_server(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != 503:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                message = {**message, "headers": [*headers, (b"server", SERVER_HEADER.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_server)


class BearerToken:
    """Refuse every request but those to `OPEN_PATHS` without `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.app = app
        self._expected = token.encode()

    def _accepts(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """One Authorization header, scheme `Bearer` in any case (RFC 9110), then the token."""
        given = [v for k, v in headers if k == b"authorization"]
        if len(given) != 1:
            return False
        scheme, _, credentials = given[0].strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(b" "), self._expected
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["path"] not in OPEN_PATHS
        if guarded and not self._accepts(scope["headers"]):
            response = response_for(Unauthorized("missing or wrong bearer token"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over `max_bytes`: by its Content-Length up front, or counted as it streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if any(self._over(v.strip()) for v in declared):
            response = response_for(self._too_large())
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)

    def _over(self, length: bytes) -> bool:
        """A declared length over the limit (however many digits it has)."""
        if not length.isdigit():
            return False
        digits = length.lstrip(b"0")
        limit = str(self.max_bytes).encode()
        return len(digits) > len(limit) or (len(digits) == len(limit) and digits > limit)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body larger than {self.max_bytes} bytes")
