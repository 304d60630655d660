"""A provider API key appears in no response, log record, error message or plaintext database column.

Keys go in through every path (CreateInstance, CreateInstanceFromDefinition, UpdateInstance with and without
a mask, allow_missing, failing requests, the legacy plaintext column) and the instances are then shared,
listed, read, sanity-checked and re-encrypted. Every byte the client received and every log record is
searched for every key; so is a text dump of every table.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ENCRYPTION_KEY, bearer
from llm_helpers import database_text, instance, running_server, stored_key

from vdb_grpc.crypto import ApiKeyCipher
from vdb_grpc.v1 import admin_pb2, common_pb2, user_pb2
from vdb_grpc.v1 import llm_instance_pb2 as pb

C = grpc.StatusCode
KEYS = {
    "create": "sk-create-5f1e0c2a9d8b4e7f",
    "definition": "sk-fromdef-0a9b8c7d6e5f4a3b",
    "update_masked": "sk-update-mask-77e2c1d0b9a8",
    "update_unmasked": "sk-update-nomask-3c4d5e6f7a8b",
    "allow_missing": "sk-allow-missing-9f8e7d6c5b4a",
    "legacy": "sk-legacy-plaintext-1a2b3c4d5e6f",
    "duplicate": "sk-duplicate-refused-0f0e0d0c0b0a",
    "invalid": "sk-invalid-refused-a1b2c3d4e5f6",
    "reader": "sk-reader-refused-6b5a4f3e2d1c",
    "no_cipher": "sk-no-cipher-refused-2e3f4a5b6c7d",
}


class Transcript:
    """Everything the client saw: responses (serialized) and errors (message, trailers)."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    async def ok(self, call: Any) -> Any:
        resp = await call
        self.blobs.append(resp.SerializeToString())
        self.blobs.append(str(resp).encode())
        return resp

    async def fails(self, call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
        try:
            await call
        except grpc.aio.AioRpcError as err:
            assert err.code() == code, (err.code(), err.details())
            self.blobs.append((err.details() or "").encode())
            self.blobs.append((err.debug_error_string() or "").encode())
            for _name, value in (err.trailing_metadata() or ()) + (err.initial_metadata() or ()):
                self.blobs.append(value if isinstance(value, bytes) else str(value).encode())
            return err
        raise AssertionError("call succeeded")


def log_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) + repr(r.args) for r in records)


def assert_no_key(haystack: bytes | str, where: str) -> None:
    for name, key in KEYS.items():
        needle = key.encode() if isinstance(haystack, bytes) else key
        assert needle not in haystack, f"key {name!r} found in {where}"
        hexed = key.encode().hex()
        assert (hexed.encode() if isinstance(haystack, bytes) else hexed) not in haystack, f"hex of {name!r} in {where}"


async def test_keys_never_leave_encrypted_storage(vdb, db_uri, server_settings, caplog):
    caplog.set_level(logging.DEBUG)
    t = Transcript()
    alice = await vdb.create_user("alice")
    await vdb.create_user("bobby")
    carol = await vdb.create_user("carol")

    # every way a key goes in
    await t.ok(
        vdb.instances.CreateInstance(
            pb.CreateInstanceRequest(instance=instance("one", api_key=KEYS["create"])), metadata=bearer(alice)
        )
    )
    await t.ok(
        vdb.instances.CreateInstanceFromDefinition(
            pb.CreateInstanceFromDefinitionRequest(
                definition="_system/openai-small",
                instance=pb.LlmInstance(instance_handle="two", api_key=KEYS["definition"]),
            ),
            metadata=bearer(alice),
        )
    )
    await t.ok(
        vdb.instances.CreateInstance(pb.CreateInstanceRequest(instance=instance("three")), metadata=bearer(alice))
    )
    await t.ok(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.LlmInstance(instance_handle="three", api_key=KEYS["update_masked"]),
                update_mask=FieldMask(paths=["api_key"]),
            ),
            metadata=bearer(alice),
        )
    )
    await t.ok(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.LlmInstance(owner="alice", instance_handle="one", api_key=KEYS["update_unmasked"])
            ),
            metadata=ADMIN,
        )
    )
    await t.ok(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(instance=instance("four", api_key=KEYS["allow_missing"]), allow_missing=True),
            metadata=bearer(alice),
        )
    )
    await t.ok(
        vdb.instances.CreateInstance(pb.CreateInstanceRequest(instance=instance("legacy")), metadata=bearer(alice))
    )
    await vdb.pool.execute(
        "UPDATE llm_service_instances SET api_key = $1 WHERE instance_handle = 'legacy'", KEYS["legacy"]
    )

    # requests carrying a key that fail
    await t.fails(
        vdb.instances.CreateInstance(
            pb.CreateInstanceRequest(instance=instance("one", api_key=KEYS["duplicate"])), metadata=bearer(alice)
        ),
        C.ALREADY_EXISTS,
    )
    await t.fails(
        vdb.instances.CreateInstance(
            pb.CreateInstanceRequest(instance=instance("five", api_key=KEYS["invalid"], dimensions=0)),
            metadata=bearer(alice),
        ),
        C.INVALID_ARGUMENT,
    )
    await t.fails(
        vdb.instances.CreateInstance(
            pb.CreateInstanceRequest(instance=instance("five", api_key=KEYS["invalid"] * 200)), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )
    await t.ok(
        vdb.instances.ShareInstance(
            pb.ShareInstanceRequest(instance_handle="one", share=common_pb2.Share(user_handle="carol", role="reader")),
            metadata=bearer(alice),
        )
    )
    await t.ok(
        vdb.instances.ShareInstance(
            pb.ShareInstanceRequest(instance_handle="two", share=common_pb2.Share(user_handle="bobby", role="editor")),
            metadata=bearer(alice),
        )
    )
    await t.fails(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.LlmInstance(owner="alice", instance_handle="one", api_key=KEYS["reader"])
            ),
            metadata=bearer(carol),
        ),
        C.PERMISSION_DENIED,
    )

    # every way an instance comes out
    for metadata in (bearer(alice), bearer(carol), ADMIN):
        listed = await t.ok(vdb.instances.ListInstances(pb.ListInstancesRequest(), metadata=metadata))
        assert all(i.api_key == "" for i in listed.instances)
    for handle in ("one", "two", "three", "four", "legacy"):
        got = await t.ok(
            vdb.instances.GetInstance(pb.GetInstanceRequest(owner="alice", instance_handle=handle), metadata=ADMIN)
        )
        assert got.instance.has_api_key and got.instance.api_key == ""
    await t.ok(
        vdb.instances.ListInstanceShares(pb.ListInstanceSharesRequest(instance_handle="one"), metadata=bearer(alice))
    )
    await t.ok(vdb.users.GetUser(user_pb2.GetUserRequest(user_handle="alice"), metadata=ADMIN))
    await t.ok(vdb.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN))
    counts = await t.ok(vdb.admin.ReencryptApiKeys(admin_pb2.ReencryptApiKeysRequest(), metadata=ADMIN))
    assert (counts.encrypted_from_plaintext, counts.already_current, counts.failed) == (1, 4, 0)
    assert (await t.ok(vdb.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN))).ok

    # a server without ENCRYPTION_KEY refuses a key without echoing it
    async with running_server(db_uri, server_settings.replace(encryption_key=None)) as plain:
        await t.fails(
            plain.instances.CreateInstance(
                pb.CreateInstanceRequest(instance=instance("six", api_key=KEYS["no_cipher"])), metadata=bearer(alice)
            ),
            C.FAILED_PRECONDITION,
        )
        await t.ok(plain.admin.SanityCheck(admin_pb2.SanityCheckRequest(), metadata=ADMIN))

    for blob in t.blobs:
        assert_no_key(blob, "a response or error")
    assert_no_key(log_text(caplog.records), "the logs")
    assert_no_key(await database_text(vdb.pool), "the database")
    # and yet every stored key decrypts to what was sent
    cipher = ApiKeyCipher(ENCRYPTION_KEY)
    expected = {
        "one": KEYS["update_unmasked"],
        "two": KEYS["definition"],
        "three": KEYS["update_masked"],
        "four": KEYS["allow_missing"],
        "legacy": KEYS["legacy"],
    }
    for handle, key in expected.items():
        blob, legacy = await stored_key(vdb.pool, "alice", handle)
        assert legacy is None and blob is not None
        assert cipher.decrypt(blob, owner="alice", instance_handle=handle) == key
    assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 5
