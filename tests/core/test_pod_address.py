"""The pod-address handoff record: its file, its bytes, and what it refuses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fleetd.core.pod_address import (
    POD_ADDRESS_DIR,
    PodAddress,
    PodAddressError,
    decode_pod_address,
    encode_pod_address,
    pod_address_file,
)

UUID = "6f1d3c2a-0b4e-4a7f-9c1d-2e3f4a5b6c7d"


def test_a_record_round_trips_in_the_documented_shape() -> None:
    record = PodAddress("10.244.3.2", UUID)
    raw = encode_pod_address(record)
    assert json.loads(raw) == {"address": "10.244.3.2", "pod": UUID}
    assert decode_pod_address(raw) == record


def test_the_file_is_named_by_the_unit_under_the_runtime_directory() -> None:
    assert Path("/run/fleet/pod-addresses") == POD_ADDRESS_DIR
    assert pod_address_file(POD_ADDRESS_DIR, "web@1.service") == POD_ADDRESS_DIR / "web@1.service"


@pytest.mark.parametrize("unit", ["../units/web.service", "a/b.service", ".hidden.service", ""])
def test_a_name_that_is_not_a_units_has_no_file(unit: str) -> None:
    with pytest.raises(PodAddressError, match="no pod-address file for"):
        pod_address_file(POD_ADDRESS_DIR, unit)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (PodAddress("10.244.3.2/24", UUID), "'address' is not an IPv4 address: '10.244.3.2/24'"),
        (PodAddress("fd00::1", UUID), "'address' is not an IPv4 address"),
        (PodAddress("10.244.3.2", ""), "'pod' must name the pod"),
    ],
)
def test_encoding_refuses_what_is_not_a_pod_address(record: PodAddress, message: str) -> None:
    with pytest.raises(PodAddressError, match=re.escape(message)):
        encode_pod_address(record)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"[]", "expected a JSON object, got list"),
        (b'{"address": "10.244.3.2"}', "'pod' must be a non-empty string, got None"),
        (b'{"address": 7, "pod": "p"}', "'address' must be a string, got 7"),
        (b'{"address": "host", "pod": "p"}', "'address' is not an IPv4 address: 'host'"),
        (b" " * 5000, "5000 bytes, more than a pod address takes"),
    ],
)
def test_decoding_names_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(PodAddressError, match=re.escape(message)):
        decode_pod_address(raw)
