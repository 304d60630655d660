"""Logs: JSON lines with request ids, access records by VDB_ACCESS_LOG, and a quiet start of the real CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ADMIN, bearer, rpc_error
from search_fixtures import make_user

from vdb_grpc.db import create_pool
from vdb_grpc.runtime.logging import JsonFormatter, RequestIdFilter, configure_logging, request_id
from vdb_grpc.server import build_server
from vdb_grpc.settings import Settings, SettingsError
from vdb_grpc.v1 import project_pb2, project_pb2_grpc


def test_json_lines_carry_the_request_id_and_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("vdb_grpc.test_json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = request_id.set("abc123")
        logger.warning("hello %s", "world")
        request_id.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello world" and first["level"] == "WARNING" and first["request_id"] == "abc123"
    assert first["logger"] == "vdb_grpc.test_json" and first["time"].endswith("+00:00")
    assert second["request_id"] is None and "ValueError: boom" in second["exception"]


def test_settings_validate_format_and_access_mode() -> None:
    s = Settings.from_env({"VDB_LOG_FORMAT": "JSON", "VDB_ACCESS_LOG": "all"})
    assert s.log_format == "json" and s.access_log == "all"
    assert Settings.from_env({}).log_format == "text" and Settings.from_env({}).access_log == "errors"
    for env in ({"VDB_LOG_FORMAT": "xml"}, {"VDB_ACCESS_LOG": "some"}):
        with pytest.raises(SettingsError):
            Settings.from_env(env)


async def serve_with(db_uri: str, settings: Settings) -> AsyncIterator[tuple[grpc.aio.Channel, str]]:
    pool = await create_pool(db_uri, settings)
    async with pool.acquire() as conn:
        key = await make_user(conn, "alice")
    server = build_server(settings, pool)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel, key
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "vdb_grpc.access"]


@pytest.mark.parametrize("mode", ["all", "errors", "off"])
async def test_access_records_by_mode(db_uri, server_settings, caplog, mode: str) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="vdb_grpc.access")
    async for channel, key in serve_with(db_uri, server_settings.replace(access_log=mode)):
        projects = project_pb2_grpc.ProjectServiceStub(channel)
        await projects.ListProjects(project_pb2.ListProjectsRequest(), metadata=bearer(key))
        err = await rpc_error(
            projects.GetProject(project_pb2.GetProjectRequest(owner="alice", project_handle="nope"), metadata=ADMIN),
            grpc.StatusCode.NOT_FOUND,
        )
    records = access_records(caplog)
    if mode == "off":
        assert records == []
        return
    codes = [getattr(r, "code", None) for r in records]
    assert codes == (["OK", "NOT_FOUND"] if mode == "all" else ["NOT_FOUND"])
    failed = records[-1]
    assert failed.method == "/vdb_grpc.v1.ProjectService/GetProject"  # type: ignore[attr-defined]
    assert failed.principal == "admin" and failed.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    assert isinstance(failed.duration_ms, float)  # type: ignore[attr-defined]
    # The access record's id is the one the client got in its trailers.
    trailer_id = dict(err.trailing_metadata() or ())["x-request-id"]
    assert failed.request_id == trailer_id  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(failed))
    assert {k: line[k] for k in ("method", "principal", "code", "request_id")} == {
        "method": "/vdb_grpc.v1.ProjectService/GetProject",
        "principal": "admin",
        "code": "NOT_FOUND",
        "request_id": trailer_id,
    }
    if mode == "all":
        assert records[0].principal == "user:alice" and records[0].levelno == logging.INFO  # type: ignore[attr-defined]


def test_configure_logging_json_to_a_stream() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream)
        # not under "vdb_grpc": the secrets scan (tests/secrets_scan.py) lowers that logger to DEBUG to see
        # every record the service writes, which would let "hidden" through whatever the root level says
        logging.getLogger("vdbt.logging").info("one")
        logging.getLogger("vdbt.logging").debug("hidden")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one"]


def test_cli_start_and_stop_print_only_our_json_lines(tmp_path: Path) -> None:
    """A real ``vdb-grpc serve`` (embedded PostgreSQL) without XDG_RUNTIME_DIR: no platformdirs warning, no
    gRPC fork-handler message, every stderr line one JSON object."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "GRPC_ENABLE_FORK_SUPPORT")}
    env.update(VDB_DATA_DIR=str(tmp_path / "data"), VDB_LISTEN="127.0.0.1:0", VDB_LOG_FORMAT="json")
    for name in list(env):
        if name.startswith("VDB_") and name not in ("VDB_DATA_DIR", "VDB_LISTEN", "VDB_LOG_FORMAT"):
            del env[name]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vdb_grpc", "serve"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "serving on" in line:
                break
        assert any("serving on" in x for x in lines), "".join(lines)
        # A health answer means the serve loop is waiting for its stop signal (handlers installed).
        port = int(json.loads(lines[-1])["message"].rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        lines += rest.splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines)
    text = "\n".join(lines)
    assert "XDG_RUNTIME_DIR" not in text and "fork" not in text, text
    records = [json.loads(x) for x in lines if x.strip()]
    assert records and all({"time", "level", "logger", "message", "request_id"} <= r.keys() for r in records)
    assert records[-1]["message"] == "stopped"
