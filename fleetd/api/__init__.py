"""The HTTP API (fleet v1, wire-compatible): built in the API issue."""
