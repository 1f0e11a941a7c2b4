"""rkt-style containers: signed single-file images, a content-addressed store, pods, stage1.

`fleet-pod` (the `cli` module) is stage0: it fetches and verifies images, renders them once per
image id, prepares a pod directory and replaces itself with stage1 (systemd-nspawn, or a "fly"
chroot), so the process that a systemd unit started is the container and systemd owns it.
Nothing here is a daemon; all state is files under the data and config directories.
"""
