"""The command line: --version, help that names each command's settings, VDB_LISTEN checked before anything starts."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_embedded import _env

from vdb_grpc import __version__
from vdb_grpc.cli import listen_problem

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("serve", "migrate", "reencrypt", "import", "export")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vdb_grpc", *args], env=_env(**env), capture_output=True, text=True, timeout=60,
        check=False, cwd=ROOT,
    )  # fmt: skip


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"vdb-grpc {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_settings_that_exist_and_points_to_template_env(command):
    out = run(command, "--help")
    assert out.returncode == 0
    named = set(re.findall(r"\b(?:VDB|ENCRYPTION)_[A-Z_]+\b", out.stdout))
    assert named, out.stdout
    template = (ROOT / "template.env").read_text()
    unknown = {n for n in named if f"{n}=" not in template} - {"VDB_API_KEY"}  # the client's key is no setting
    assert not unknown, f"{command} --help names settings template.env lacks: {unknown}"
    assert "template.env" in out.stdout


def test_help_of_each_command_names_its_key_settings():
    assert {"VDB_LISTEN", "VDB_DATABASE_URL", "VDB_DATA_DIR", "VDB_ADMIN_KEY"} <= set(
        run("serve", "--help").stdout.split()
    )
    assert "ENCRYPTION_KEY_PREVIOUS" in run("reencrypt", "--help").stdout
    assert "VDB_API_KEY" in run("import", "--help").stdout


def _taken_port(reuseport: bool) -> socket.socket:
    s = socket.socket()
    if reuseport:  # what a running gRPC server sets: a probe that also set it would share the port silently
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("reuseport", [False, True])
def test_serve_refuses_a_taken_port_before_starting_postgresql(reuseport, tmp_path):
    data_dir = tmp_path / "vdb-data"
    with _taken_port(reuseport) as taken:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        started = time.monotonic()
        out = run("serve", VDB_DATA_DIR=str(data_dir), VDB_LISTEN=listen)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert listen in lines[0] and "VDB_LISTEN" in lines[0] and "in use" in lines[0]
    assert not data_dir.exists()  # no cluster was created, no secrets generated, nothing migrated
    assert time.monotonic() - started < 30  # generous: only catches a PostgreSQL start


def test_listen_problem():
    assert listen_problem("127.0.0.1:0") is None
    with _taken_port(False) as taken:
        assert "in use" in (listen_problem(f"127.0.0.1:{taken.getsockname()[1]}") or "")
    assert listen_problem("no-such-host.invalid:50051") is not None
    problem = listen_problem("[::1]:0")  # None, or a reason where the machine has no IPv6
    assert problem is None or isinstance(problem, str)
