"""The per-host agent inside fleetd: presence, the machine's schedule, systemd, unit states."""
