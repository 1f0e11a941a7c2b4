"""`fleetctl fd-forward` relays a whole HTTP exchange with a real fleetd over stdin and stdout,
and `fleetctl --tunnel` speaks the API through it (here with a stand-in for `ssh` that runs the
remote command locally; tests/rig/test_ssh.py uses the real ssh and sshd)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest

from fleetd.api.listeners import serve_api
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.engine.cluster import wait_until
from tests.integration.cluster import Result, _invoke
from tests.integration.scenario import HELLO

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
WITHIN = 15.0
UNIT = {
    "desiredState": "inactive",
    "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}],
}


@pytest.fixture
async def api_socket(etcd: EtcdClient, key_prefix: str, socket_dir: str) -> AsyncIterator[str]:
    """fleetd's API, as fleetd serves it, on a unix socket only."""
    path = os.path.join(socket_dir, "fleet.sock")
    config = Config(etcd_key_prefix=key_prefix, listen=(path,))
    api = asyncio.create_task(serve_api(config, etcd, Keys(key_prefix), shutdown_timeout=1.0))

    async def listening() -> bool:
        if api.done():
            api.result()
        return await asyncio.to_thread(os.path.exists, path)

    try:
        await wait_until(listening, "the API socket", within=WITHIN)
        yield path
    finally:
        api.cancel()
        await asyncio.gather(api, return_exceptions=True)


class Exchange:
    """HTTP/1.1 over a process's stdin and stdout, parsed by h11 as any client would."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: str, target: str, body: object = None) -> tuple[int, object]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        data = b"" if body is None else json.dumps(body).encode()
        headers = [("Host", "fleet"), ("Content-Length", str(len(data)))]
        if data:
            headers.append(("Content-Type", "application/json"))
        out = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        out += self.conn.send(h11.Data(data=data)) if data else b""
        out += self.conn.send(h11.EndOfMessage())
        self.process.stdin.write(out)
        await self.process.stdin.drain()
        status, content = 0, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await asyncio.wait_for(self.process.stdout.read(65536), WITHIN)
                assert chunk, "fd-forward closed its stdout mid-response"
                self.conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                content += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()  # keep-alive: the next request, same connection
                return status, json.loads(content) if content else None


async def test_fd_forward_relays_a_whole_api_exchange(api_socket: str) -> None:
    process = await asyncio.create_subprocess_exec(
        FLEETCTL,
        "fd-forward",
        api_socket,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        http = Exchange(process)
        assert await http.request("GET", "/fleet/v1/units") == (200, {})
        created, _ = await http.request("PUT", "/fleet/v1/units/hello.service", UNIT)
        assert created == 201
        status, unit = await http.request("GET", "/fleet/v1/units/hello.service")
        assert status == 200
        assert isinstance(unit, dict)
        assert (unit["name"], unit["desiredState"]) == ("hello.service", "inactive")
        status, page = await http.request("GET", "/fleet/v1/units")
        assert status == 200
        assert isinstance(page, dict)
        assert [u["name"] for u in page["units"]] == ["hello.service"]
        assert await http.request("DELETE", "/fleet/v1/units/hello.service") == (204, None)
        assert process.stdin is not None
        process.stdin.close()  # the end of stdin: fd-forward half-closes, fleetd closes, done
        _, err = await asyncio.wait_for(process.communicate(), WITHIN)
        assert (process.returncode, err) == (0, b"")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_fd_forward_says_what_is_wrong(socket_dir: str) -> None:
    for argv, message in (
        ([], "Provide a single argument\n"),
        (["a", "b"], "Provide a single argument\n"),
        ([os.path.join(socket_dir, "nothing.sock")], "Failed dialing remote address: "),
    ):
        process = await asyncio.create_subprocess_exec(
            FLEETCTL,
            "fd-forward",
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), WITHIN)
        assert (process.returncode, out) == (1, b""), argv
        assert err.decode().startswith(message), err


FAKE_SSH = """#!{python}
# A stand-in for ssh: records its arguments, skips ssh's options and runs the remote command
# here, with this process's stdin and stdout, as sshd would on the node.
import os, sys
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
while args[0].startswith("-"):
    args = args[2:] if args[0] in ("-p", "-l", "-o", "-W") else args[1:]
os.execvp(args[1], args[1:])
"""


async def test_tunnel_runs_fd_forward_over_ssh_and_carries_every_call(
    api_socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "ssh.log"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable, log=str(log)))
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(FLEETCTL).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hello.service").write_text(HELLO)
    tunnel = ["--tunnel", "node1", "--endpoint", f"unix://{api_socket}"]
    tunnel += ["--known-hosts-file", str(tmp_path / "known_hosts")]

    async def fleetctl(*argv: str) -> Result:
        return await asyncio.to_thread(_invoke, [*tunnel, *argv])

    submitted = await fleetctl("submit", "hello.service")
    assert (submitted.code, submitted.out, submitted.err) == (
        0,
        "Unit hello.service inactive\n",
        "",
    )
    files = await fleetctl("list-unit-files", "--fields", "unit,dstate")
    assert (files.code, files.out) == (0, "UNIT\t\tDSTATE\nhello.service\tinactive\n")
    destroyed = await fleetctl("destroy", "--no-block", "hello.service")
    assert (destroyed.code, destroyed.out) == (0, "Destroyed hello.service\n")
    ran = log.read_text().splitlines()
    assert ran, "fleetctl did not run ssh"
    known_hosts = tmp_path / "known_hosts"
    for line in ran:
        assert line == (
            f"-p 22 -l core -o ConnectTimeout=10 -o StrictHostKeyChecking=ask "
            f"-o UserKnownHostsFile={known_hosts} node1 fleetctl fd-forward {api_socket}"
        )
