"""Tests for fleetctl."""
