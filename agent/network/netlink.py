"""The real `NetworkKernel`: netlink through pyroute2, in this network namespace or a named one.

Routes this machine adds carry their own routing protocol number (`ROUTE_PROTOCOL`), so
`observe` reads back only the routes the agent made: the bridge's connected route, a default
route or anything an operator added towards the cluster network is never planned away.
Neighbour entries are permanent; forwarding (fdb) entries are the VXLAN device's unicast
entries with a remote (`dst`) address.

Calls block (pyroute2's synchronous socket); the agent runs them in a worker thread. A kernel
error is raised as an `OSError` with the kernel's errno; "already there" on add and "not there"
on delete are not errors.
"""

from __future__ import annotations

import ctypes
import errno
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nftsocket import Cmp
from pyroute2.nftables.expressions import ipv4addr, masq
from pyroute2.nftables.main import NFTables

from agent.network.plan import (
    AddFdb,
    AddNeighbour,
    AddRoute,
    DeleteFdb,
    DeleteLink,
    DeleteNeighbour,
    DeleteRoute,
    EnsureVxlan,
    FdbEntry,
    Neighbour,
    Observed,
    Route,
    Task,
    VxlanDevice,
)

ROUTE_PROTOCOL = 101  # marks the agent's routes (rtnetlink protocol numbers above 4 are free)
MAIN_TABLE = 254
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
AF_INET = 2
CLONE_NEWNET = 0x40000000
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}
NFT_TABLE = "pyfleet"  # nftables table (family ip) holding the masquerade rule
NFT_CHAIN = "postrouting"
NF_ACCEPT = 1
NAT_PRIORITY = 100  # srcnat


def _os_error(exc: NetlinkError, what: str) -> OSError:
    return OSError(exc.code, f"{what}: {errno.errorcode.get(exc.code, exc.code)} ({exc})")


class NetlinkKernel:
    """`NetworkKernel` over netlink; `netns` names a network namespace (None: this one)."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns

    @contextmanager
    def _socket(self) -> Iterator[Any]:
        ipr = IPRoute(netns=self._netns) if self._netns else IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()

    # ---- reading

    def observe(self, network: IPv4Network, vxlan_name: str | None) -> Observed:
        with self._socket() as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            vxlan, vxlan_index = None, None
            if vxlan_name is not None:
                for index, name in names.items():
                    if name == vxlan_name:
                        vxlan, vxlan_index = _read_vxlan(ipr, index), index
            routes = set()
            for msg in ipr.get_routes(family=AF_INET, table=MAIN_TABLE, proto=ROUTE_PROTOCOL):
                dst, gateway = msg.get("dst"), msg.get("gateway")
                if dst is None or gateway is None:
                    continue
                subnet = IPv4Network(f"{dst}/{msg['dst_len']}")
                if not subnet.subnet_of(network):
                    continue
                onlink = bool(msg["flags"] & RTNH_F_ONLINK)
                device = names.get(msg.get("oif")) if onlink else None
                routes.add(Route(subnet, IPv4Address(gateway), device, onlink=onlink))
            neighbours, fdb = set(), set()
            if vxlan is not None:
                for msg in ipr.get_neighbours(ifindex=vxlan_index, family=AF_INET):
                    if msg["state"] & NUD_PERMANENT and msg.get("lladdr"):
                        neighbours.add(
                            Neighbour(IPv4Address(msg.get("dst")), msg.get("lladdr"), vxlan.name)
                        )
                for msg in ipr.fdb("dump", ifindex=vxlan_index):
                    dst = msg.get("dst")
                    if msg["ifindex"] == vxlan_index and dst and msg.get("lladdr"):
                        fdb.add(FdbEntry(msg.get("lladdr"), IPv4Address(dst), vxlan.name))
        return Observed(vxlan, frozenset(routes), frozenset(neighbours), frozenset(fdb))

    def link_mtu(self, address: IPv4Address) -> int:
        """The MTU of the link that holds `address` (1500 when none does)."""
        with self._socket() as ipr:
            for msg in ipr.get_addr(family=AF_INET):
                if msg.get("address") == str(address):
                    return int(ipr.get_links(msg["index"])[0].get("mtu"))
        return 1500

    def masquerade(self, network: IPv4Network) -> None:
        """Masquerade what pods send out of the cluster network, and nothing else: one
        nftables rule, `ip saddr <network> ip daddr != <network> masquerade`, in the table
        `pyfleet` (made afresh, so a rule for an earlier network goes)."""
        if self._netns is not None:  # nftables sockets take no namespace: open one there
            _in_netns(self._netns, lambda: NetlinkKernel().masquerade(network))
            return
        nft = NFTables(nfgen_family=AF_INET)
        try:
            if any(t.get("NFTA_TABLE_NAME") == NFT_TABLE for t in nft.get_tables()):
                nft.table("del", name=NFT_TABLE)
            nft.table("add", name=NFT_TABLE)
            nft.chain(
                "add",
                table=NFT_TABLE,
                name=NFT_CHAIN,
                hook="postrouting",
                type="nat",
                priority=NAT_PRIORITY,
                policy=NF_ACCEPT,
            )
            nft.rule(
                "add",
                table=NFT_TABLE,
                chain=NFT_CHAIN,
                expressions=(
                    ipv4addr(src=str(network)),
                    ipv4addr(dst=str(network), op=Cmp.NFT_CMP_NEQ),
                    masq(),
                ),
            )
        except NetlinkError as exc:
            raise _os_error(exc, f"masquerade traffic leaving {network}") from None
        finally:
            nft.close()

    # ---- writing

    def apply(self, task: Task) -> None:
        with self._socket() as ipr:
            try:
                self._apply(ipr, task)
            except NetlinkError as exc:
                raise _os_error(exc, type(task).__name__) from None

    def _index(self, ipr: Any, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise OSError(errno.ENODEV, f"no link {name}")
        return int(found[0])

    def _apply(self, ipr: Any, task: Task) -> None:
        match task:
            case EnsureVxlan(device):
                _delete_link(ipr, device.name)
                _create_vxlan(ipr, device)
            case DeleteLink(name):
                _delete_link(ipr, name)
            case AddRoute(route):
                ipr.route("replace", **self._route_args(ipr, route))
            case DeleteRoute(route):
                _ignore_gone(lambda: ipr.route("del", **self._route_args(ipr, route)))
            case AddNeighbour(n):
                ipr.neigh(
                    "replace",
                    dst=str(n.address),
                    lladdr=n.mac,
                    ifindex=self._index(ipr, n.device),
                    state=NUD_PERMANENT,
                )
            case DeleteNeighbour(n):
                found = ipr.link_lookup(ifname=n.device)
                if found:
                    _ignore_gone(lambda: ipr.neigh("del", dst=str(n.address), ifindex=found[0]))
            case AddFdb(entry):
                try:
                    ipr.fdb(
                        "append",
                        ifindex=self._index(ipr, entry.device),
                        lladdr=entry.mac,
                        dst=str(entry.dst),
                    )
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            case DeleteFdb(entry):
                found = ipr.link_lookup(ifname=entry.device)
                if found:
                    _ignore_gone(
                        lambda: ipr.fdb(
                            "del", ifindex=found[0], lladdr=entry.mac, dst=str(entry.dst)
                        )
                    )

    def _route_args(self, ipr: Any, route: Route) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": str(route.dst),
            "gateway": str(route.gateway),
            "table": MAIN_TABLE,
            "proto": ROUTE_PROTOCOL,
        }
        if route.device is not None:
            args["oif"] = self._index(ipr, route.device)
        if route.onlink:
            args["flags"] = RTNH_F_ONLINK
        return args


def _in_netns(name: str, call: Callable[[], None]) -> None:
    """Run `call` on a thread of its own that entered network namespace `name` (setns acts on
    the calling thread only), and re-raise what it raised."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{name}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({name})")
            call()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _ignore_gone(call: Any) -> None:
    try:
        call()
    except NetlinkError as exc:
        if exc.code not in _GONE:
            raise


def _delete_link(ipr: Any, name: str) -> None:
    found = ipr.link_lookup(ifname=name)
    if found:
        _ignore_gone(lambda: ipr.link("del", index=found[0]))


def _create_vxlan(ipr: Any, device: VxlanDevice) -> None:
    args: dict[str, Any] = {
        "ifname": device.name,
        "kind": "vxlan",
        "vxlan_id": device.vni,
        "vxlan_port": device.port,
        "vxlan_local": str(device.local),
        "vxlan_learning": 0,
        "mtu": device.mtu,
    }
    if device.mac is not None:
        args["address"] = device.mac
    ipr.link("add", **args)
    try:
        index = ipr.link_lookup(ifname=device.name)[0]
        ipr.addr("add", index=index, address=str(device.address.ip), prefixlen=32)
        ipr.link("set", index=index, state="up")
    except BaseException:
        _delete_link(ipr, device.name)  # nothing half-made stays behind
        raise


def _read_vxlan(ipr: Any, index: int) -> VxlanDevice | None:
    link = ipr.get_links(index)[0]
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get("IFLA_INFO_DATA")
    addresses = [
        IPv4Interface(f"{a.get('address')}/{a['prefixlen']}")
        for a in ipr.get_addr(index=index, family=AF_INET)
    ]
    if len(addresses) != 1 or data.get("IFLA_VXLAN_LOCAL") is None:
        # not the device this machine makes: report it with a placeholder address so the
        # planner replaces it
        addresses = [IPv4Interface("0.0.0.0/32")]
    return VxlanDevice(
        link.get("ifname"),
        int(data.get("IFLA_VXLAN_ID")),
        int(data.get("IFLA_VXLAN_PORT")),
        IPv4Address(data.get("IFLA_VXLAN_LOCAL") or "0.0.0.0"),
        addresses[0],
        int(link.get("mtu")),
        link.get("address"),
    )
