"""The flat container network on this machine: its subnet lease and the routes to the others."""
