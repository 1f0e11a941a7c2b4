"""A real etcd for the test suite: one single-member server on free loopback ports.

`EtcdServer` runs /usr/bin/etcd (or $ETCD_BINARY) as a subprocess with its data
dir in a fresh temp dir on tmpfs (/dev/shm when it exists), so fsyncs are cheap.
Invariants:

- A missing binary fails loudly (RuntimeError); the suite never skips etcd tests.
- `start()` returns only once etcd answers /health, or raises with its log tail
  after a deadline. It polls the condition; it never sleeps blindly.
- `restart()` keeps the data dir and both ports, so clients reconnect to the
  same address and see the same revisions.
- `cleanup()` stops the process and removes the data dir; it is idempotent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ETCD_BINARY = os.environ.get("ETCD_BINARY", "/usr/bin/etcd")
START_TIMEOUT = 20.0
POLL_INTERVAL = 0.02


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdServer:
    """One etcd process; see the module docstring for the lifecycle."""

    def __init__(self, *, progress_notify_interval: str = "200ms") -> None:
        if not (os.path.isfile(ETCD_BINARY) and os.access(ETCD_BINARY, os.X_OK)):
            raise RuntimeError(
                f"etcd binary not found at {ETCD_BINARY}: install etcd (Debian: apt-get install "
                "etcd-server) or set ETCD_BINARY; the registry tests need a real etcd"
            )
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.workdir = Path(tempfile.mkdtemp(prefix="pyfleet-etcd-", dir=base))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.name = "pyfleet-test"
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.args = [
            ETCD_BINARY,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={self.name}={peer_url}",
            f"--initial-cluster-token=pyfleet-{uuid.uuid4().hex[:12]}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=50",
            "--election-timeout=250",
            f"--experimental-watch-progress-notify-interval={progress_notify_interval}",
            "--logger=zap",
            f"--log-outputs={self.log_path}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start etcd and wait until it answers; raise with its log if it does not."""
        if self.running:
            raise RuntimeError("etcd is already running")
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self.process.returncode} while starting:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"etcd did not answer within {timeout}s:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then wait for exit (SIGKILL if it lingers past `timeout`)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL and wait: no graceful shutdown, like a crash or a power cut."""
        self._signal(signal.SIGKILL, 10.0)

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP, and wait until it took: etcd keeps its sockets but answers nothing."""
        self._require_running().send_signal(signal.SIGSTOP)
        self._wait_state(lambda state: state == "T", timeout)

    def resume(self, timeout: float = 5.0) -> None:
        self._require_running().send_signal(signal.SIGCONT)
        self._wait_state(lambda state: state != "T", timeout)

    def restart(self) -> None:
        """Stop (if running) and start again on the same data dir and ports."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no etcd log)"

    def _signal(self, signum: signal.Signals, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("etcd is not running")
        return self.process

    def _wait_state(self, wanted: Callable[[str], bool], timeout: float) -> None:
        """Poll the process state letter in /proc (T: stopped) until `wanted` holds."""
        stat = Path(f"/proc/{self._require_running().pid}/stat")
        deadline = time.monotonic() + timeout
        while not wanted(stat.read_text().rsplit(")", 1)[1].split()[0]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not change state within {timeout}s")
            time.sleep(POLL_INTERVAL)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1.0) as response:
                body = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return bool(body.get("health") == "true")
