"""A pod on the cluster network (`--net default` on a node with a subnet): its own network
namespace, a veth pair to the node's bridge, an address from the node's subnet, the bridge as
its gateway and the backend's MTU. Netlink through pyroute2.

Layout, for pod UUID `u` (32 hex digits without dashes `h`):
* the namespace `/run/netns/fleet-<h>` (as `ip netns` names them), which stage1 enters
  (`systemd-nspawn --network-namespace-path=`);
* the host end `fp<h[:10]>`, a port of the bridge `fleet0` (made on first use with the node
  subnet's first address, flannel's `FLANNEL_SUBNET`), and `eth0` inside, with the pod's address
  and a default route via the bridge;
* loopback up inside;
* for published ports (`--port 8080:80/tcp`), an nftables table `ip fleetpod-<h[:12]>` whose
  `prerouting` and `output` chains (nat, dstnat priority) send the node's address and port to
  the pod's (`publish_ports`; `unpublish_ports` deletes the table).

`connect_pod` leaves nothing half-made: any failure removes the namespace and the host end
before the error goes on. `disconnect_pod` removes both (the kernel deletes a veth pair with
either end); it is idempotent. Addresses are `fleetpod.ipam`'s.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import threading
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.nftables.expressions import genex, ipv4addr
from pyroute2.nftables.main import NFTables

from fleetd.core.container import PortMapping
from fleetpod.errors import PodError
from fleetpod.ipam import NodeNetwork, PortTaken

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


IPPROTO = {"tcp": 6, "udp": 17}
CLONE_NEWNET = 0x40000000
DSTNAT_PRIORITY = -100


def ports_table(uuid: str) -> str:
    return f"fleetpod-{_hex(uuid)[:12]}"


def _value(data: bytes) -> dict[str, Any]:
    return {"attrs": [("NFTA_DATA_VALUE", data)]}


def _dnat_rule(node_ip: IPv4Address, pod_ip: IPv4Address, port: PortMapping) -> list[Any]:
    """`ip daddr NODE PROTO dport N dnat to POD:M` as nftables expressions."""
    return [
        ipv4addr(dst=str(node_ip)),
        [genex("meta", {"dreg": 1, "key": 16})],  # NFT_META_L4PROTO
        [genex("cmp", {"sreg": 1, "op": 0, "data": _value(bytes([IPPROTO[port.protocol]]))})],
        [genex("payload", {"dreg": 1, "base": 2, "offset": 2, "len": 2})],  # transport dport
        [genex("cmp", {"sreg": 1, "op": 0, "data": _value(port.host.to_bytes(2, "big"))})],
        [genex("immediate", {"dreg": 1, "data": _value(pod_ip.packed)})],
        [genex("immediate", {"dreg": 2, "data": _value(port.pod.to_bytes(2, "big"))})],
        [genex("nat", {"type": 1, "family": 2, "reg_addr_min": 1, "reg_proto_min": 2})],
    ]


def _run_in(host_netns: str | None, call: Callable[[], None]) -> None:
    """`call` in this namespace, or on a thread that entered `host_netns` (tests)."""
    if host_netns is None:
        call()
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(NETNS_DIR / host_netns) as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({host_netns})")
            call()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def check_port_free(port: PortMapping) -> None:
    """PortTaken when something on the node already listens on the node port."""
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("0.0.0.0", port.host))
        except OSError as exc:
            raise PortTaken(
                f"node port {port.host}/{port.protocol} is taken on this node ({exc.strerror})"
            ) from None


def publish_ports(
    uuid: str,
    node_ip: IPv4Address,
    pod_ip: IPv4Address,
    ports: Sequence[PortMapping],
    *,
    host_netns: str | None = None,
) -> None:
    """Send `node_ip`:port to the pod (from other machines, and from the node itself); nothing
    is left behind when it fails."""
    table = ports_table(uuid)

    def make() -> None:
        for port in ports:
            check_port_free(port)
        nft = NFTables(nfgen_family=2)
        try:
            nft.table("add", name=table)
            for chain in ("prerouting", "output"):
                nft.chain(
                    "add",
                    table=table,
                    name=chain,
                    hook=chain,
                    type="nat",
                    priority=DSTNAT_PRIORITY,
                    policy=1,
                )
                for port in ports:
                    nft.rule(
                        "add",
                        table=table,
                        chain=chain,
                        expressions=_dnat_rule(node_ip, pod_ip, port),
                    )
        except NetlinkError as exc:
            raise PodError(f"cannot publish ports of pod {uuid}: {exc}") from None
        finally:
            nft.close()

    try:
        _run_in(host_netns, make)
    except BaseException:
        unpublish_ports(uuid, host_netns=host_netns)
        raise


def unpublish_ports(uuid: str, *, host_netns: str | None = None) -> None:
    """Delete the pod's port table, if there is one."""
    table = ports_table(uuid)

    def remove() -> None:
        nft = NFTables(nfgen_family=2)
        try:
            if any(t.get("NFTA_TABLE_NAME") == table for t in nft.get_tables()):
                nft.table("del", name=table)
        finally:
            nft.close()

    _run_in(host_netns, remove)
