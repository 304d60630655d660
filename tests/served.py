"""`vdb-grpc serve` as a real subprocess whose log is read continuously (a full stderr pipe would block it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any VDB_/ENCRYPTION_KEY setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VDB_", "ENCRYPTION_KEY"))}
    env.update(extra)
    return env


class ServedProcess:
    """Start ``vdb-grpc serve`` with ``env`` and wait until it serves (``port``)."""

    def __init__(self, env: dict[str, str], *, timeout: float = 90) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vdb_grpc", "serve"], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.lines: list[str] = []
        self._serving = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(timeout):
            self.kill()
            raise AssertionError("server did not start:\n" + self.log)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"serving on [\d.]+:(\d+)", line)
            if m and not self._serving.is_set():
                self.port = int(m.group(1))
                self._serving.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self) -> None:
        """Send SIGTERM (drain, then stop)."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to exit; its exit code."""
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


async def health_status(target: str, within: float = 2) -> int | None:
    """The server's overall health status, None when it does not answer."""
    async with grpc.aio.insecure_channel(target) as ch:
        try:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=within)
        except grpc.aio.AioRpcError:
            return None
        return int(resp.status)


def postmaster_pid(pgdata: Path) -> int | None:
    """The PID in ``postmaster.pid`` (None: no such file)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies are dead)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` is true; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started
