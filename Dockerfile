# The pyfleet node: systemd as PID 1, D-Bus, systemd-container and fleetd in /opt/pyfleet.
# The same image runs etcd (Debian's etcd-server) when started with `etcd ...` as its command.
#
# Build it with scripts/rig-build: it makes rig/wheelhouse (pyfleet and its pinned
# dependencies, built on the host) and, where no registry is reachable, the base image itself
# (debootstrap, with every package below already installed). The build context is rig/:
#
#   docker build -f Dockerfile -t pyfleet-node rig/
#
# Run it without --privileged: an explicit capability list, seccomp unconfined, the host's
# /sys/fs/cgroup mounted read-write, tmpfs on /run and /run/lock (docker-compose.yml has it).
#
# Steps that change often come last and are few: each step is a layer commit, which takes
# seconds on some storage drivers (fuse-overlayfs), even for a step that only sets metadata.
FROM debian:bookworm-slim

ENV container=docker LANG=C.UTF-8
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]

# Debian packages: installed only when the base lacks them (a registry's bookworm-slim); the
# locally built base has them all, so this step needs no network there.
COPY debian-packages /usr/local/share/pyfleet/debian-packages
RUN set -eu; \
    packages=$(grep -v '^[[:space:]]*\(#\|$\)' /usr/local/share/pyfleet/debian-packages); \
    installed=$(dpkg-query -W -f='${db:Status-Abbrev}\n' $packages 2>/dev/null | grep -c '^ii' || true); \
    if [ "$installed" -ne "$(echo $packages | wc -w)" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages; \
        rm -rf /var/lib/apt/lists/*; \
    fi

# systemd in a container: nothing that needs real hardware, consoles or logins. etcd is not a
# node service: the etcd container runs the etcd binary as its command instead of systemd.
RUN systemctl mask \
        getty.target console-getty.service systemd-logind.service \
        systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
        systemd-udev-trigger.service systemd-remount-fs.service systemd-firstboot.service \
        systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
        sys-kernel-tracing.mount sys-fs-fuse-connections.mount dev-hugepages.mount \
        e2scrub_reap.service etcd.service

# An SSH server, as fleet's nodes had one: `fleetctl --tunnel` runs `fleetctl fd-forward` on the
# node through it, and `fleetctl ssh` opens shells. Its own step, after the package list (which
# a locally built base bakes in), so the base stays as other checkouts built it; needs a
# reachable Debian mirror when the base lacks it. No host keys in the image: each node makes
# its own at first boot (ssh-host-keys.service).
RUN set -eu; \
    if ! dpkg-query -W -f='${db:Status-Abbrev}' openssh-server 2>/dev/null | grep -q '^ii'; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -f /etc/ssh/ssh_host_*; \
    mkdir -p /etc/ssh/authorized_keys.d

# pyfleet's dependencies in a virtual environment, from wheels only (no index: the build is
# offline), in their own layer so that a change to pyfleet alone reuses it.
COPY wheelhouse/deps /tmp/wheelhouse
RUN python3 -m venv /opt/pyfleet \
    && /opt/pyfleet/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        /tmp/wheelhouse/*.whl \
    && rm -rf /tmp/wheelhouse

# /etc/fleet/fleet.conf, fleet.service, and fleet-pod-gc.timer (fleet-pod's gc twice a day).
COPY rootfs/ /

# pyfleet itself, then fleet.service enabled. systemd gives services a clean environment, so a
# drop-in names every FLEET_<OPTION> variable (from fleetd's own option list) for
# PassEnvironment=: the values the container was started with reach fleetd.
# Every container gets its own machine id at boot: systemd fills an empty /etc/machine-id, from
# $container_uuid when the container is given one (32 hex digits), else at random. D-Bus's copy
# must not be a file: systemd would take the id from it, and every node would share one.
COPY wheelhouse/pyfleet /tmp/wheelhouse
RUN /opt/pyfleet/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --no-deps /tmp/wheelhouse/*.whl \
    && /opt/pyfleet/bin/pip check \
    && rm -rf /tmp/wheelhouse \
    && ln -sf /opt/pyfleet/bin/fleetd /opt/pyfleet/bin/fleetctl /opt/pyfleet/bin/fleet-pod \
        /usr/local/bin/ \
    && mkdir -p /etc/systemd/system/fleet.service.d \
    && /opt/pyfleet/bin/python -c 'from fleetd.config import OPTIONS; print("[Service]"); \
print("PassEnvironment=" + " ".join("FLEET_" + name.upper() for name in OPTIONS))' \
        > /etc/systemd/system/fleet.service.d/container-environment.conf \
    && systemctl enable fleet.service fleet-pod-gc.timer ssh.service ssh-host-keys.service \
    && : > /etc/machine-id \
    && ln -sf /etc/machine-id /var/lib/dbus/machine-id
