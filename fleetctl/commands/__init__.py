"""fleetctl's commands, one module per command; `fleetctl.app` registers them."""
