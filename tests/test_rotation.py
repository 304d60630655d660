"""Key rotation end to end: keys written under key A, restart with B (A previous), re-encrypt, restart with B
alone — every stored key still decrypts. Also the `vdb-grpc reencrypt` command and an interrupted run."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ADMIN_KEY, bearer, rpc_error
from llm_helpers import C, create_instance, running_server, stored_key

from vdb_grpc.crypto import ApiKeyCipher, ApiKeyDecryptionError
from vdb_grpc.db import create_pool
from vdb_grpc.domain.admin import reencrypt_api_keys
from vdb_grpc.v1 import admin_pb2
from vdb_grpc.v1 import llm_instance_pb2 as pb

KEY_A = "rotation-key-A-0123456789abcdef0123456789"
KEY_B = "rotation-key-B-fedcba9876543210fedcba9876"
VDB_GRPC = Path(sys.executable).parent / "vdb-grpc"


def legacy_blob(secret: str, plaintext: str) -> bytes:
    """A key encrypted the way the Go service did: nonce || AES-GCM(sha256(secret)), no associated data."""
    nonce = os.urandom(12)
    return nonce + AESGCM(hashlib.sha256(secret.encode()).digest()).encrypt(nonce, plaintext.encode(), None)


async def write_keys_under_a(db_uri: str, settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Instances of alice with keys through every path, under key A; returns handle -> plaintext key."""
    async with running_server(db_uri, settings.replace(encryption_key=KEY_A)) as vdb:
        alice = await vdb.create_user("alice")
        await create_instance(vdb, alice, "created", api_key="sk-created")
        await vdb.instances.CreateInstanceFromDefinition(
            pb.CreateInstanceFromDefinitionRequest(
                definition="_system/openai-small", instance=pb.LlmInstance(instance_handle="from-def", api_key="sk-def")
            ),
            metadata=bearer(alice),
        )
        await create_instance(vdb, alice, "updated")
        await vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.LlmInstance(instance_handle="updated", api_key="sk-updated"),
                update_mask=FieldMask(paths=["api_key"]),
            ),
            metadata=bearer(alice),
        )
        await create_instance(vdb, alice, "plain")
        await create_instance(vdb, alice, "go-blob")
        await create_instance(vdb, alice, "no-key")
        await vdb.pool.execute("UPDATE llm_service_instances SET api_key = 'sk-plain' WHERE instance_handle = 'plain'")
        await vdb.pool.execute(
            "UPDATE llm_service_instances SET api_key_encrypted = $1 WHERE instance_handle = 'go-blob'",
            legacy_blob(KEY_A, "sk-go"),
        )
    return {
        "created": "sk-created",
        "from-def": "sk-def",
        "updated": "sk-updated",
        "plain": "sk-plain",
        "go-blob": "sk-go",
    }


async def assert_all_decrypt(pool, cipher: ApiKeyCipher, expected: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    for handle, key in expected.items():
        blob, legacy = await stored_key(pool, "alice", handle)
        assert legacy is None, handle
        assert blob is not None and cipher.decrypt(blob, owner="alice", instance_handle=handle) == key, handle
        assert not cipher.needs_reencryption(blob), handle
    assert await stored_key(pool, "alice", "no-key") == (None, None)


async def test_rotation_end_to_end(db_uri, server_settings):
    expected = await write_keys_under_a(db_uri, server_settings)

    # restart with B, A as previous: everything still usable, the sanity check says what to do
    rotating = server_settings.replace(encryption_key=KEY_B, encryption_key_previous=(KEY_A,))
    async with running_server(db_uri, rotating) as vdb:
        listed = await vdb.instances.ListInstances(pb.ListInstancesRequest(), metadata=ADMIN)
        assert {i.instance_handle: i.has_api_key for i in listed.instances} == {
            **dict.fromkeys(expected, True),
            "no-key": False,
        }
        report = await vdb.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN)
        assert sorted((f.check, f.subject) for f in report.findings) == [
            *[
                ("API_KEY_NEEDS_REENCRYPTION", f"instance:alice/{h}")
                for h in ("created", "from-def", "go-blob", "updated")
            ],
            ("PLAINTEXT_API_KEY", "instance:alice/plain"),
        ]
        counts = await vdb.admin.ReencryptApiKeys(admin_pb2.ReencryptApiKeysRequest(), metadata=ADMIN)
        assert (counts.reencrypted, counts.encrypted_from_plaintext, counts.already_current, counts.failed) == (
            4,
            1,
            0,
            0,
        )
        # safe to run twice: nothing left to do
        counts = await vdb.admin.ReencryptApiKeys(admin_pb2.ReencryptApiKeysRequest(), metadata=ADMIN)
        assert (counts.reencrypted, counts.encrypted_from_plaintext, counts.already_current, counts.failed) == (
            0,
            0,
            5,
            0,
        )
        assert (await vdb.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN)).ok

    # restart with B alone: every key decrypts through the helper, none with A
    async with running_server(db_uri, server_settings.replace(encryption_key=KEY_B)) as vdb:
        assert (await vdb.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN)).ok
        await assert_all_decrypt(vdb.pool, ApiKeyCipher(KEY_B), expected)
        only_a = ApiKeyCipher(KEY_A)
        for handle in expected:
            blob, _ = await stored_key(vdb.pool, "alice", handle)
            with pytest.raises(ApiKeyDecryptionError):
                only_a.decrypt(blob, owner="alice", instance_handle=handle)
        # and the service keeps working with them
        await vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.LlmInstance(owner="alice", instance_handle="created", description="x")
            ),
            metadata=ADMIN,
        )
        await assert_all_decrypt(vdb.pool, ApiKeyCipher(KEY_B), expected)


async def test_reencrypt_reports_keys_that_decrypt_with_no_configured_key(db_uri, server_settings):
    expected = await write_keys_under_a(db_uri, server_settings)
    async with running_server(db_uri, server_settings.replace(encryption_key=KEY_B)) as vdb:  # A forgotten
        counts = await vdb.admin.ReencryptApiKeys(admin_pb2.ReencryptApiKeysRequest(), metadata=ADMIN)
        assert (counts.reencrypted, counts.encrypted_from_plaintext, counts.already_current, counts.failed) == (
            0,
            1,
            0,
            4,
        )
        assert sorted(counts.failed_instances) == [f"alice/{h}" for h in ("created", "from-def", "go-blob", "updated")]
        report = await vdb.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN)
        assert {f.check for f in report.findings} == {"API_KEY_UNDECRYPTABLE"}
    # nothing was damaged: with A as previous the run completes
    rotating = server_settings.replace(encryption_key=KEY_B, encryption_key_previous=(KEY_A,))
    async with running_server(db_uri, rotating) as vdb:
        counts = await vdb.admin.ReencryptApiKeys(admin_pb2.ReencryptApiKeysRequest(), metadata=ADMIN)
        assert (counts.reencrypted, counts.already_current, counts.failed) == (4, 1, 0)
        await assert_all_decrypt(vdb.pool, ApiKeyCipher(KEY_B), expected)


async def test_interrupted_run_leaves_every_key_readable_and_a_rerun_finishes(db_uri, server_settings):
    expected = await write_keys_under_a(db_uri, server_settings)
    rotating = ApiKeyCipher(KEY_B, [KEY_A])
    pool = await create_pool(db_uri, server_settings)
    try:
        seen: list[int] = []

        async def interrupt_after_three(instance_id: int) -> None:
            seen.append(instance_id)
            if len(seen) > 3:
                raise KeyboardInterrupt  # the operator's Ctrl-C

        with pytest.raises(KeyboardInterrupt):
            await reencrypt_api_keys(pool, rotating, batch_size=2, on_row=interrupt_after_three)
        blobs = [await stored_key(pool, "alice", h) for h in expected]
        done = sum(
            1 for blob, legacy in blobs if blob is not None and legacy is None and not rotating.needs_reencryption(blob)
        )
        assert done == 3  # three rows rewritten, the rest untouched
        for handle, key in expected.items():  # all readable by the rotating server
            blob, legacy = await stored_key(pool, "alice", handle)
            assert (
                legacy == key if blob is None else rotating.decrypt(blob, owner="alice", instance_handle=handle) == key
            )
        counts = await reencrypt_api_keys(pool, rotating, batch_size=2)
        assert (counts.reencrypted + counts.encrypted_from_plaintext, counts.already_current, counts.failed) == (
            2,
            3,
            0,
        )
        await assert_all_decrypt(pool, ApiKeyCipher(KEY_B), expected)
    finally:
        await pool.close()


async def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VDB_", "ENCRYPTION_KEY"))}
    return await asyncio.to_thread(
        subprocess.run,
        [str(VDB_GRPC), "reencrypt"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cli_reencrypt(db_uri, server_settings):
    expected = await write_keys_under_a(db_uri, server_settings)
    env = {"VDB_DATABASE_URL": db_uri, "VDB_ADMIN_KEY": ADMIN_KEY, "VDB_LOG_LEVEL": "warning"}

    refused = await run_cli(env)
    assert refused.returncode == 2 and "ENCRYPTION_KEY" in refused.stderr

    failing = await run_cli({**env, "ENCRYPTION_KEY": KEY_B})
    assert failing.returncode == 1
    assert "failed: 4" in failing.stdout and "failed instance: alice/created" in failing.stdout
    assert "encrypted_from_plaintext: 1" in failing.stdout  # the plaintext key is protected even so

    done = await run_cli({**env, "ENCRYPTION_KEY": KEY_B, "ENCRYPTION_KEY_PREVIOUS": KEY_A})
    assert done.returncode == 0, done.stderr
    assert "reencrypted: 4" in done.stdout and "failed: 0" in done.stdout
    again = await run_cli({**env, "ENCRYPTION_KEY": KEY_B, "ENCRYPTION_KEY_PREVIOUS": KEY_A})
    assert again.returncode == 0 and "already_current: 5" in again.stdout and "reencrypted: 0" in again.stdout
    for out in (refused, failing, done, again):
        for key in expected.values():
            assert key not in out.stdout + out.stderr

    async with running_server(db_uri, server_settings.replace(encryption_key=KEY_B)) as vdb:
        await assert_all_decrypt(vdb.pool, ApiKeyCipher(KEY_B), expected)
        await rpc_error(
            vdb.admin.ReencryptApiKeys(admin_pb2.ReencryptApiKeysRequest(), metadata=bearer("0" * 64)),
            C.UNAUTHENTICATED,
        )
