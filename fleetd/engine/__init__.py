"""The engine: elected leader, watch-fed cluster view and fenced application of planned tasks."""
