"""TLS on the served TCP listener: client certificates instead of (or beside) the bearer token,
as fleet's own fleetctl authenticates (`--ca-file`, `--cert-file`, `--key-file`)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from devtools.certs import CertFiles, write_all
from devtools.etcd_server import free_port
from fleetd.api.listeners import ApiStartError, serve_api
from fleetd.api.tls import subject_name
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.test_listeners import UNIT, ready, serving
from tests.engine.cluster import wait_until

REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)
"""How a refused handshake reaches an httpx client: TLS 1.3 clients finish their side first and
learn of the server's alert on their first read."""
CLIENT_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_all(tmp_path_factory.mktemp("certs"))


def tls_client(address: str, certs: CertFiles, cert: tuple[Path, Path] | None) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return httpx.AsyncClient(base_url=f"https://{address}", verify=context, timeout=CLIENT_TIMEOUT)


def tls_config(tmp_path: Path, certs: CertFiles, key_prefix: str, *, token: bool) -> Config:
    token_file = ""
    if token:
        path = tmp_path / "token"
        path.write_text("s3cret\n")
        path.chmod(0o600)
        token_file = str(path)
    return Config(
        listen=(str(tmp_path / "fleet.sock"), f"127.0.0.1:{free_port()}"),
        api_token_file=token_file,
        api_certfile=str(certs.server),
        api_keyfile=str(certs.server_key),
        api_client_cafile=str(certs.ca),
        etcd_key_prefix=key_prefix,
    )


async def test_a_client_certificate_from_the_ca_is_served_and_others_are_refused(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str, certs: CertFiles
) -> None:
    config = tls_config(tmp_path, certs, key_prefix, token=False)
    address = config.listen[1]
    mine = (certs.client, certs.client_key)
    async with serving(config, etcd) as served, tls_client(address, certs, mine) as client:
        await wait_until(lambda: ready(client), "the API to answer over TLS", within=10)
        machines = await client.get("/fleet/v1/machines")
        assert (machines.status_code, machines.content) == (200, b"{}")
        created = await client.put("/fleet/v1/units/a.service", json=UNIT)
        assert created.status_code == 201, created.text
        for cert in (None, (certs.stranger, certs.stranger_key)):
            async with tls_client(address, certs, cert) as other:
                with pytest.raises(REFUSED):
                    await other.get("/fleet/v1/machines")
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=CLIENT_TIMEOUT) as plain:
            with pytest.raises(REFUSED):
                await plain.get("/fleet/v1/machines")
        assert (await client.get("/fleet/v1/units/a.service")).status_code == 200
        assert not served.task.done()


async def test_with_a_token_as_well_a_client_may_bring_either(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str, certs: CertFiles
) -> None:
    config = tls_config(tmp_path, certs, key_prefix, token=True)
    address = config.listen[1]
    async with serving(config, etcd), tls_client(address, certs, None) as anonymous:
        await wait_until(lambda: ready(anonymous), "the API to answer over TLS", within=10)
        refused = await anonymous.get("/fleet/v1/machines")
        assert (refused.status_code, refused.json()["error"]["message"]) == (
            401,
            "missing or wrong bearer token",
        )
        with_token = await anonymous.get(
            "/fleet/v1/machines", headers={"Authorization": "Bearer s3cret"}
        )
        assert with_token.status_code == 200
        async with tls_client(address, certs, (certs.client, certs.client_key)) as client:
            assert (await client.get("/fleet/v1/machines")).status_code == 200
        async with tls_client(address, certs, (certs.stranger, certs.stranger_key)) as stranger:
            with pytest.raises(REFUSED):
                await stranger.get("/fleet/v1/machines", headers={"Authorization": "Bearer s3cret"})


async def test_unusable_certificate_files_stop_the_api_before_it_listens(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str, certs: CertFiles
) -> None:
    good = tls_config(tmp_path, certs, key_prefix, token=False)
    for change, problem in (
        ({"api_keyfile": str(certs.client_key)}, "cannot load the certificate and its key"),
        ({"api_certfile": str(tmp_path / "missing.pem")}, "cannot load the certificate"),
        ({"api_client_cafile": str(certs.server_key)}, "api_client_cafile .*: cannot load it"),
    ):
        config = Config(**{**vars(good), **change})
        with pytest.raises(ApiStartError, match=problem):
            await serve_api(config, etcd, Keys(key_prefix))
        assert not (tmp_path / "fleet.sock").exists()


def test_subject_names_read_like_rfc_4514() -> None:
    certificate = {"subject": ((("organizationName", "ops"),), (("commonName", "admin"),))}
    assert subject_name(certificate) == "CN=admin,O=ops"
