"""systemd for the agent: the `UnitManager` port (`port`), the units directory (`files`), the
D-Bus adapter (`dbus`, the only importer of dbus-fast) and a fake of the same behaviour (`fake`).
"""
