"""The suite-wide secrets scan (tests/secrets_scan.py) finds a leak where it could happen."""

from __future__ import annotations

import logging

import grpc
import pytest
from harness import ADMIN, ADMIN_KEY, Harness, bearer
from secrets_scan import SecretScanner, SecretsScanPlugin

from vdb_grpc.v1 import user_pb2 as upb

KEY = "0123456789abcdef" * 4


def test_a_key_in_a_response_error_or_log_record_is_found() -> None:
    scanner = SecretScanner([ADMIN_KEY])
    scanner.learn(KEY)
    scanner.learn("sk-provider-secret-value-123")
    scanner.learn("short")  # too short to scan for
    assert scanner.find(f"user {KEY} exists") == KEY
    assert scanner.find(f"prefix{KEY}00ff") == KEY  # inside a longer hex run
    assert scanner.find("upstream said: sk-provider-secret-value-123 is invalid") == "sk-provider-secret-value-123"
    assert scanner.find(f"bearer {ADMIN_KEY}") == ADMIN_KEY
    assert scanner.find("a short key, and " + KEY[:63]) is None
    scanner.texts.append(("response of /X", f"api_key: {KEY}"))
    record = logging.LogRecord(
        "vdb_grpc.x", logging.ERROR, __file__, 1, "failed with %s", ("sk-provider-secret-value-123",), None
    )
    scanner.records.append(record)
    hits = scanner.drain()
    assert len(hits) == 2 and "response of /X" in hits[0] and "log record of vdb_grpc.x" in hits[1]
    assert scanner.drain() == []  # drained


def test_an_issued_key_is_learned_and_its_one_legitimate_place_not_reported() -> None:
    scanner = SecretScanner()
    scanner.record_response(
        "/UserService/CreateUser", upb.CreateUserResponse(user=upb.User(user_handle="a"), api_key=KEY)
    )
    assert KEY in scanner.hex_secrets
    assert scanner.drain() == []
    scanner.record_response("/UserService/GetUser", upb.GetUserResponse(user=upb.User(user_handle="a", name=KEY)))
    assert len(scanner.drain()) == 1


async def test_the_session_plugin_sees_real_calls_and_log_records(vdb: Harness, request: pytest.FixtureRequest) -> None:
    plugin = request.config.pluginmanager.get_plugin("vdb-secrets-scan")
    assert isinstance(plugin, SecretsScanPlugin)
    scanner = plugin.scanner
    key = await vdb.create_user("alice")
    assert key in scanner.hex_secrets  # learned from the CreateUser response
    with pytest.raises(grpc.aio.AioRpcError):
        await vdb.users.GetUser(upb.GetUserRequest(user_handle="bobby"), metadata=bearer(key))
    assert any(where.startswith("error of /vdb_grpc.v1.UserService/GetUser") for where, _ in scanner.texts)
    await vdb.users.GetUser(upb.GetUserRequest(user_handle="alice"), metadata=ADMIN)
    assert any(where.startswith("response of") for where, _ in scanner.texts)
    logging.getLogger("vdb_grpc.test").warning("deliberate leak of %s", key)
    hits = scanner.drain()  # what the teardown scan would report (drained here, so this test passes)
    assert len(hits) == 1 and "deliberate leak" in hits[0]
