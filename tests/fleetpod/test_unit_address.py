"""fleet-pod's side of the pod-address handoff: the file it writes for the agent, and when it
takes it back."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from fleetd.core.pod_address import PodAddress, decode_pod_address, encode_pod_address
from fleetpod.unit_address import address_dir, publish_unit_address, withdraw_unit_address

POD = "6f1d3c2a-0b4e-4a7f-9c1d-2e3f4a5b6c7d"
NEWER = "7a2e4d3b-1c5f-4b80-8d2e-3f4a5b6c7d8e"


def test_the_directory_comes_from_the_environment(pod_address_dir: Path) -> None:
    assert address_dir() == pod_address_dir


def test_the_address_is_written_as_the_agent_reads_it(pod_address_dir: Path) -> None:
    assert publish_unit_address("web.service", POD, IPv4Address("10.244.3.2"))
    raw = (pod_address_dir / "web.service").read_bytes()
    assert decode_pod_address(raw) == PodAddress("10.244.3.2", POD)
    assert [p.name for p in pod_address_dir.iterdir()] == ["web.service"]  # no temporary left


def test_withdrawing_for_a_pod_leaves_a_newer_pods_file(pod_address_dir: Path) -> None:
    publish_unit_address("web.service", NEWER, IPv4Address("10.244.3.3"))
    assert not withdraw_unit_address("web.service", POD)
    assert (pod_address_dir / "web.service").exists()
    assert withdraw_unit_address("web.service", NEWER)
    assert not (pod_address_dir / "web.service").exists()
    assert not withdraw_unit_address("web.service")  # nothing left: nothing to do


def test_withdrawing_for_the_unit_removes_any_file(pod_address_dir: Path) -> None:
    pod_address_dir.mkdir()
    (pod_address_dir / "web.service").write_text("not a record")
    assert withdraw_unit_address("web.service", POD)  # not anybody's record: removed
    (pod_address_dir / "db.service").write_bytes(encode_pod_address(PodAddress("10.0.0.2", POD)))
    assert withdraw_unit_address("db.service")
    assert list(pod_address_dir.iterdir()) == []


def test_a_failure_is_reported_and_never_raised(pod_address_dir: Path) -> None:
    warnings: list[str] = []
    assert not publish_unit_address(
        "../x.service", POD, IPv4Address("10.0.0.2"), warn=warnings.append
    )
    pod_address_dir.parent.joinpath("pod-addresses").write_text("a file, not a directory")
    assert not publish_unit_address(
        "web.service", POD, IPv4Address("10.0.0.2"), warn=warnings.append
    )
    assert not withdraw_unit_address("web.service")
    assert len(warnings) == 2
    assert warnings[0].startswith(f"cannot hand the address of pod {POD} to fleetd (no pod-address")
    assert warnings[1].startswith(f"cannot hand the address of pod {POD} to fleetd (")
