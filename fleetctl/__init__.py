"""fleetctl: the command-line client that speaks fleet's v1 HTTP API."""
