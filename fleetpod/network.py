"""A pod on the cluster network (`--net default` on a node with a subnet): its own network
namespace, a veth pair to the node's bridge, an address from the node's subnet, the bridge as
its gateway and the backend's MTU. Netlink through pyroute2.

Layout, for pod UUID `u` (32 hex digits without dashes `h`):
* the namespace `/run/netns/fleet-<h>` (as `ip netns` names them), which stage1 enters
  (`systemd-nspawn --network-namespace-path=`);
* the host end `fp<h[:10]>`, a port of the bridge `fleet0` (made on first use with the node
  subnet's first address, flannel's `FLANNEL_SUBNET`), and `eth0` inside, with the pod's address
  and a default route via the bridge;
* loopback up inside.

`connect_pod` leaves nothing half-made: any failure removes the namespace and the host end
before the error goes on. `disconnect_pod` removes both (the kernel deletes a veth pair with
either end); it is idempotent. Addresses are `fleetpod.ipam`'s.
"""

from __future__ import annotations

import errno
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from fleetpod.errors import PodError
from fleetpod.ipam import NodeNetwork

BRIDGE = "fleet0"
NETNS_DIR = Path("/run/netns")
POD_INTERFACE = "eth0"


def _hex(uuid: str) -> str:
    return uuid.replace("-", "").lower()


def netns_name(uuid: str) -> str:
    return f"fleet-{_hex(uuid)}"


def netns_path(uuid: str) -> Path:
    return NETNS_DIR / netns_name(uuid)


def host_veth_name(uuid: str) -> str:
    return f"fp{_hex(uuid)[:10]}"


def _ignore(codes: set[int], call: Any) -> None:
    try:
        call()
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


def ensure_bridge(ipr: Any, node: NodeNetwork) -> int:
    """The bridge, made if missing, with the gateway's address and up; its index."""
    found = ipr.link_lookup(ifname=BRIDGE)
    if not found:
        _ignore({errno.EEXIST}, lambda: ipr.link("add", ifname=BRIDGE, kind="bridge"))
        found = ipr.link_lookup(ifname=BRIDGE)
    index = int(found[0])
    addresses = {
        IPv4Interface(f"{a.get('address')}/{a['prefixlen']}")
        for a in ipr.get_addr(index=index, family=2)
    }
    for stale in addresses - {node.gateway}:  # the node's subnet changed
        _ignore(
            {errno.EADDRNOTAVAIL},
            lambda stale=stale: ipr.addr(
                "del", index=index, address=str(stale.ip), prefixlen=stale.network.prefixlen
            ),
        )
    if node.gateway not in addresses:
        _ignore(
            {errno.EEXIST},
            lambda: ipr.addr(
                "add",
                index=index,
                address=str(node.gateway.ip),
                prefixlen=node.gateway.network.prefixlen,
            ),
        )
    ipr.link("set", index=index, state="up", mtu=node.mtu)
    return index


def _host(host_netns: str | None) -> Any:
    return IPRoute(netns=host_netns) if host_netns else IPRoute()


def connect_pod(
    node: NodeNetwork, uuid: str, address: IPv4Interface, *, host_netns: str | None = None
) -> Path:
    """Make the pod's namespace and link (see the module docstring); the namespace's path.
    `host_netns` names the node's namespace when it is not this process's (tests)."""
    name, host_end = netns_name(uuid), host_veth_name(uuid)
    peer = f"fq{_hex(uuid)[:10]}"
    if name in netns.listnetns():  # what a killed earlier start of this pod left
        disconnect_pod(uuid, host_netns=host_netns)
    try:
        netns.create(name)
        with _host(host_netns) as ipr:
            bridge = ensure_bridge(ipr, node)
            ipr.link("add", ifname=host_end, kind="veth", peer=peer)
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=name)
            host_index = ipr.link_lookup(ifname=host_end)[0]
            ipr.link("set", index=host_index, master=bridge, mtu=node.mtu, state="up")
        with IPRoute(netns=name) as inside:
            inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")
            index = inside.link_lookup(ifname=peer)[0]
            inside.link("set", index=index, ifname=POD_INTERFACE, mtu=node.mtu)
            inside.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
            inside.link("set", index=index, state="up")
            inside.route("add", dst="0.0.0.0/0", gateway=str(node.gateway.ip))
    except (NetlinkError, OSError) as exc:
        disconnect_pod(uuid, host_netns=host_netns)
        code = getattr(exc, "code", None) or getattr(exc, "errno", None)
        raise PodError(
            f"cannot connect pod {uuid} to the cluster network ({address}): "
            f"{errno.errorcode.get(code or 0, exc)} ({exc})"
        ) from None
    except BaseException:
        disconnect_pod(uuid, host_netns=host_netns)
        raise
    return netns_path(uuid)


def disconnect_pod(uuid: str, *, host_netns: str | None = None) -> None:
    """Remove the pod's namespace and host link, whichever exist."""
    with _host(host_netns) as ipr:
        for name in (host_veth_name(uuid), f"fq{_hex(uuid)[:10]}"):
            found = ipr.link_lookup(ifname=name)
            if found:
                _ignore({errno.ENODEV}, lambda found=found: ipr.link("del", index=found[0]))
    if netns_name(uuid) in netns.listnetns():
        netns.remove(netns_name(uuid))
