"""Tests for fleetctl's commands, one module per command module."""
