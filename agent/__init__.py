"""The per-host agent that drives systemd: built in the agent issue."""
