"""fleetctl over `https://` with client certificates (fleet's `--ca-file`, `--cert-file`,
`--key-file` and their `FLEETCTL_*` variables), against the API as `serve_api` serves it with
TLS and a client CA: what fleet's own fleetctl needs to reach a remote pyfleet."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.certs import CertFiles, write_all
from devtools.etcd_server import free_port
from fleetd.api.listeners import serve_api
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.engine.cluster import wait_until
from tests.integration.cluster import Result, _invoke
from tests.integration.scenario import HELLO

STARTUP_WITHIN = 15.0


@pytest.fixture
async def tls_endpoint(
    etcd: EtcdClient, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, CertFiles]]:
    """The API on TLS with client certificates only (no token); the endpoint and the certs."""
    certs = write_all(tmp_path / "certs")
    port = free_port()
    config = Config(
        etcd_key_prefix=key_prefix,
        listen=(str(tmp_path / "fleet.sock"), f"127.0.0.1:{port}"),
        api_certfile=str(certs.server),
        api_keyfile=str(certs.server_key),
        api_client_cafile=str(certs.ca),
    )
    monkeypatch.chdir(tmp_path)
    api = asyncio.create_task(serve_api(config, etcd, Keys(key_prefix), shutdown_timeout=1.0))
    endpoint = f"https://127.0.0.1:{port}"
    flags = tls_flags(certs)

    async def answering() -> bool:
        if api.done():
            api.result()
        return (await fleetctl("--endpoint", endpoint, *flags, "list-machines")).code == 0

    try:
        await wait_until(answering, "the API over TLS", within=STARTUP_WITHIN)
        yield endpoint, certs
    finally:
        api.cancel()
        await asyncio.gather(api, return_exceptions=True)


def tls_flags(certs: CertFiles) -> list[str]:
    return [
        f"--ca-file={certs.ca}",
        "--cert-file",
        str(certs.client),
        "--key-file",
        str(certs.client_key),
    ]


async def fleetctl(*argv: str) -> Result:
    return await asyncio.to_thread(_invoke, list(argv))


async def test_fleetctl_with_a_client_certificate_submits_and_lists(
    tls_endpoint: tuple[str, CertFiles],
) -> None:
    endpoint, certs = tls_endpoint
    await asyncio.to_thread(Path("hello.service").write_text, HELLO, encoding="utf-8")
    submit = await fleetctl("--endpoint", endpoint, *tls_flags(certs), "submit", "hello.service")
    assert (submit.code, submit.out, submit.err) == (0, "Unit hello.service inactive\n", "")
    # global flags after the command, as cobra accepts them
    listed = await fleetctl("list-unit-files", "--endpoint", endpoint, *tls_flags(certs))
    assert listed.code == 0, listed.err
    assert listed.out.splitlines()[1].startswith("hello.service\t")


async def test_the_certificate_files_from_the_environment(
    tls_endpoint: tuple[str, CertFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, certs = tls_endpoint
    monkeypatch.setenv("FLEETCTL_ENDPOINT", endpoint)
    monkeypatch.setenv("FLEETCTL_CA_FILE", str(certs.ca))
    monkeypatch.setenv("FLEETCTL_CERT_FILE", str(certs.client))
    monkeypatch.setenv("FLEETCTL_KEY_FILE", str(certs.client_key))
    machines = await fleetctl("list-machines")
    assert (machines.code, machines.out, machines.err) == (0, "MACHINE\tIP\tMETADATA\n", "")


async def test_without_the_right_certificate_fleetctl_fails_with_a_clear_error(
    tls_endpoint: tuple[str, CertFiles],
) -> None:
    endpoint, certs = tls_endpoint
    ca = f"--ca-file={certs.ca}"
    anonymous = await fleetctl("--endpoint", endpoint, ca, "list-machines")
    assert anonymous.code == 1
    assert f"(cannot reach {endpoint}: " in anonymous.err, anonymous.err
    assert "without one signed by its CA (--cert-file, --key-file)" in anonymous.err
    stranger = await fleetctl(
        "--endpoint",
        endpoint,
        ca,
        f"--cert-file={certs.stranger}",
        f"--key-file={certs.stranger_key}",
        "list-machines",
    )
    assert stranger.code == 1
    assert "without one signed by its CA (--cert-file, --key-file)" in stranger.err
    # a server the CA did not sign is not trusted, even with a good client certificate
    flags = tls_flags(certs)
    flags[0] = f"--ca-file={certs.stranger}"
    untrusted = await fleetctl("--endpoint", endpoint, *flags, "list-machines")
    assert untrusted.code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.err, untrusted.err


async def test_half_a_key_pair_or_a_missing_file_is_a_usage_error(
    tls_endpoint: tuple[str, CertFiles],
) -> None:
    endpoint, certs = tls_endpoint
    half = await fleetctl("--endpoint", endpoint, f"--cert-file={certs.client}", "list-machines")
    assert (half.code, half.out) == (1, "")
    assert half.err == "Error: --cert-file needs --key-file too (a certificate and its key)\n"
    missing = os.path.join(os.getcwd(), "missing.pem")
    gone = await fleetctl("--endpoint", endpoint, f"--ca-file={missing}", "list-machines")
    assert gone.code == 1
    assert gone.err.startswith(f"Error: cannot use --ca-file {missing}: "), gone.err
