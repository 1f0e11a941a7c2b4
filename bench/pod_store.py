"""What fleet-pod's stage0 costs before a container starts: build, sign, fetch, render.

Builds an image from a generated tree (one large incompressible file plus many small ones),
signs it, then measures, each in its own child process so peak memory is that step's alone:
`fetch` (decompress while hashing, check every member, verify the signature, commit) and
`render` (extract into the tree store), plus a second `fetch` of the same image (already in the
store) and a copy of the rendered tree (the pod rootfs when no overlay can be mounted).
Prints JSON and writes `bench/results/pod_store.json`.

    PYTHONPATH=. .venv/bin/python -m bench.pod_store --large-mib 64 --small-files 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetpod.fetch import fetch
from fleetpod.image import build_image
from fleetpod.keys import generate_key_pair, load_private_key
from fleetpod.signature import sign_image
from fleetpod.stage0 import copy_tree
from fleetpod.store import ImageStore
from fleetpod.trust import TrustStore

NAME = "example.com/bench"


def make_tree(root: Path, large_mib: int, small_files: int) -> int:
    """The rootfs: one large random file and `small_files` 1 KiB files in 100 directories."""
    (root / "bin").mkdir(parents=True)
    with (root / "bin" / "large").open("wb") as large:
        for _ in range(large_mib):
            large.write(os.urandom(1 << 20))
    for index in range(small_files):
        directory = root / "data" / f"d{index % 100:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index}").write_bytes(os.urandom(1024))
    return large_mib * (1 << 20) + small_files * 1024


def _step(name: str, work: str, queue: Any) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    base = Path(work)
    store = ImageStore(base / "data" / "images")
    trust = TrustStore(base / "config" / "trustedkeys")
    started = time.perf_counter()
    if name in ("fetch", "fetch-again"):
        record = fetch(
            str(base / "image.aci"), store=store, trust=trust, insecure=frozenset(), warn=print
        )
        assert record.name == NAME
    elif name == "render":
        store.render(store.resolve(NAME).id)
    else:  # copy: the pod rootfs without an overlay
        copy_tree(store.render(store.resolve(NAME).id), base / "pod-rootfs")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    queue.put(
        {
            "step": name,
            "seconds": round(seconds, 3),
            "peak_rss_mib": peak,
            "rss_before_mib": before,  # the interpreter with fleet-pod's modules imported
        }
    )


def measure(step: str, work: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its own peak RSS
    queue = context.Queue()
    process = context.Process(target=_step, args=(step, str(work), queue))
    process.start()
    result: dict[str, Any] = queue.get(timeout=600)
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--small-files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pod-bench-") as temporary:
        work = Path(temporary)
        payload = make_tree(work / "rootfs", args.large_mib, args.small_files)
        generate_key_pair(work / "signer.key", work / "signer.pub")
        TrustStore(work / "config" / "trustedkeys").add(
            (work / "signer.pub").read_bytes(), prefix=NAME, source="bench"
        )
        started = time.perf_counter()
        image_id = build_image(
            work / "rootfs", work / "image.aci", name=NAME, version="1.0", exec_=["/bin/large"]
        )
        built = time.perf_counter() - started
        sign_image(work / "image.aci", load_private_key(work / "signer.key"))
        steps = [measure(step, work) for step in ("fetch", "render", "fetch-again", "copy")]
        result = {
            "payload_mib": round(payload / (1 << 20), 1),
            "files": args.small_files + 1,
            "archive_mib": round((work / "image.aci").stat().st_size / (1 << 20), 1),
            "image_id": image_id[:39],
            "build_seconds": round(built, 3),
            "steps": steps,
            "fetch_mib_per_s": round(payload / (1 << 20) / steps[0]["seconds"], 1),
        }
    out = Path(__file__).parent / "results" / "pod_store.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
