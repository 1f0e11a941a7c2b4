"""The network configuration (flannel's JSON and defaults), subnet choice and lease names."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.core.network import (
    Backend,
    NetworkConfigError,
    NetworkFull,
    SubnetLease,
    choose_subnet,
    decode_subnet_lease,
    parse_network_config,
    parse_subnet_key_name,
    subnet_key_name,
)


def config(**fields: object) -> str:
    return json.dumps({"Network": "10.244.0.0/16", **fields})


def test_only_the_network_is_needed_and_the_rest_are_flannels_defaults() -> None:
    parsed = parse_network_config(config())
    assert parsed.as_json() == {
        "Network": "10.244.0.0/16",
        "SubnetLen": 24,
        "SubnetMin": "10.244.1.0",
        "SubnetMax": "10.244.255.0",
        "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472},
    }
    assert parsed.subnet_count == 255


def test_a_network_smaller_than_a_22_gets_subnets_two_bits_longer() -> None:
    parsed = parse_network_config(json.dumps({"Network": "192.168.8.0/24"}))
    assert parsed.subnet_len == 26
    assert [str(s) for s in parsed.subnets()] == [
        "192.168.8.64/26",
        "192.168.8.128/26",
        "192.168.8.192/26",
    ]


def test_explicit_fields_and_host_gw() -> None:
    text = config(
        SubnetLen=20, SubnetMin="10.244.32.0", SubnetMax="10.244.48.0", Backend={"Type": "host-gw"}
    )
    parsed = parse_network_config(text)
    assert parsed.backend == Backend("host-gw")
    assert [str(s) for s in parsed.subnets()] == ["10.244.32.0/20", "10.244.48.0/20"]
    assert parse_network_config(json.dumps(parsed.as_json())) == parsed


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ("{}", "Network: missing"),
        (json.dumps({"Network": 10}), "Network: must be a CIDR string"),
        (json.dumps({"Network": "10.244.0.1/16"}), "Network: '10.244.0.1/16'"),
        (json.dumps({"Network": "fd00::/64"}), "Network: fd00::/64 is not IPv4"),
        (json.dumps({"Network": "10.0.0.0/30"}), "SubnetLen: /32 is too small"),
        (config(SubnetLen=16), "SubnetLen: /16 does not fit"),
        (config(SubnetLen=30), "SubnetLen: /30 is too small"),
        (config(SubnetLen="24"), "SubnetLen: must be a whole number"),
        (config(SubnetLen=True), "SubnetLen: must be a whole number"),
        (config(SubnetMin="10.245.0.0"), "SubnetMin: 10.245.0.0 is not inside"),
        (config(SubnetMax="10.244.3.7"), "SubnetMax: 10.244.3.7 does not start a /24"),
        (config(SubnetMin="x"), "SubnetMin: 'x' is not an IPv4 address"),
        (config(SubnetMin="10.244.9.0", SubnetMax="10.244.2.0"), "SubnetMin: 10.244.9.0 is above"),
        (config(Backend={"Type": "udp"}), 'Backend.Type: "udp" is not supported'),
        (config(Backend="vxlan"), "Backend: must be an object"),
        (config(Backend={"Type": "vxlan", "VNI": 0}), "Backend.VNI: 0 is out of range"),
        (config(Backend={"Type": "vxlan", "VNI": 2**24}), "Backend.VNI: 16777216 is out of range"),
        (config(Backend={"Port": 70000}), "Backend.Port: 70000 is out of range"),
        (config(Backend={"Type": "vxlan", "GBP": True}), "Backend.GBP: not a vxlan option"),
        (config(Backend={"Type": "host-gw", "VNI": 2}), "Backend.VNI: host-gw takes no options"),
        (config(EnableIPv6=True), "EnableIPv6"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(NetworkConfigError) as caught:
        parse_network_config(text)
    assert field in str(caught.value)


def test_a_machine_keeps_the_subnet_it_remembers_while_it_is_free() -> None:
    parsed = parse_network_config(config())
    mine = IPv4Network("10.244.7.0/24")
    assert choose_subnet(parsed, set(), "a" * 32, mine) == mine
    other = choose_subnet(parsed, {mine}, "a" * 32, mine)
    assert other != mine
    assert parsed.in_range(other)


def test_a_remembered_subnet_outside_the_range_is_not_reused() -> None:
    parsed = parse_network_config(config(SubnetMin="10.244.10.0", SubnetMax="10.244.20.0"))
    chosen = choose_subnet(parsed, set(), "a" * 32, IPv4Network("10.244.3.0/24"))
    assert chosen != IPv4Network("10.244.3.0/24")
    assert parsed.in_range(chosen)


def test_machines_starting_together_mostly_try_different_subnets() -> None:
    parsed = parse_network_config(config())
    first_tries = {choose_subnet(parsed, set(), f"{i:032x}") for i in range(20)}
    assert len(first_tries) >= 15


def test_a_full_network_is_a_clear_error() -> None:
    parsed = parse_network_config(json.dumps({"Network": "192.168.8.0/24"}))
    with pytest.raises(NetworkFull, match=r"network 192.168.8.0/24 is full: all 3 subnets /26"):
        choose_subnet(parsed, set(parsed.subnets()), "a" * 32)


@given(st.sets(st.integers(0, 254)), st.text(min_size=1, max_size=32))
def test_a_chosen_subnet_is_free_and_in_range(taken_indexes: set[int], machine: str) -> None:
    parsed = parse_network_config(config())
    taken = {parsed.subnet_at(i) for i in taken_indexes}
    if len(taken) == parsed.subnet_count:
        with pytest.raises(NetworkFull):
            choose_subnet(parsed, taken, machine)
        return
    chosen = choose_subnet(parsed, taken, machine)
    assert chosen not in taken
    assert parsed.in_range(chosen)


def test_lease_names_are_flannels() -> None:
    subnet = IPv4Network("10.244.3.0/24")
    assert subnet_key_name(subnet) == "10.244.3.0-24"
    assert parse_subnet_key_name("10.244.3.0-24") == subnet
    for bad in ("10.244.3.0", "10.244.3.0-x", "10.244.3.1-24", "fd00::-64"):
        with pytest.raises(ValueError, match=r"."):
            parse_subnet_key_name(bad)


def test_vxlan_takes_its_headers_from_the_mtu() -> None:
    assert Backend("vxlan").mtu(1500) == 1450
    assert Backend("host-gw").mtu(1500) == 1500


def test_subnet_lease_round_trips_in_flannel_json() -> None:
    vxlan = SubnetLease(
        IPv4Network("10.244.3.0/24"), IPv4Address("10.0.0.5"), "vxlan", 1, "aa:bb:cc:dd:ee:ff"
    )
    assert decode_subnet_lease("10.244.3.0-24", vxlan.encode()) == vxlan
    assert vxlan.as_json() == {
        "PublicIP": "10.0.0.5",
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"},
    }
    host_gw = SubnetLease(IPv4Network("10.244.4.0/24"), IPv4Address("10.0.0.6"), "host-gw")
    assert decode_subnet_lease("10.244.4.0-24", host_gw.encode()) == host_gw


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"PublicIP": "nope", "BackendType": "host-gw"}', "PublicIP"),
        (b'{"PublicIP": "::1", "BackendType": "host-gw"}', "not IPv4"),
        (b'{"PublicIP": "10.0.0.5", "BackendType": "udp"}', "BackendType"),
        (b'{"PublicIP": "10.0.0.5", "BackendType": "vxlan"}', "BackendData"),
        (b'{"PublicIP": "10.0.0.5", "BackendData": {"VNI": 0, "VtepMAC": "aa"}}', "VNI"),
        (b'{"PublicIP": "10.0.0.5", "BackendData": {"VNI": 1, "VtepMAC": "aa"}}', "VtepMAC"),
    ],
)
def test_malformed_subnet_lease_names_the_field(value: bytes, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        decode_subnet_lease("10.244.3.0-24", value)
