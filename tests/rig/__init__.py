"""Tests of the Docker rig: the node image, etcd from it, and docker-compose.yml.

Ryuk, testcontainers' reaper, is an image to pull and no registry is reachable here: it is
turned off before any module of this package imports testcontainers (and again in
`tests.rig.nodes`, in case another package imported testcontainers first).
"""

import os

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
