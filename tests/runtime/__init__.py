"""Tests for runtime."""
