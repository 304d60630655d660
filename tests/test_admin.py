"""AdminService over real gRPC: admin only; SanityCheck changes nothing; ResetDatabase needs confirmation."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from harness import ADMIN, ANON, ENCRYPTION_KEY, bearer, field_violations, rpc_error, status_details
from llm_helpers import BUILTIN, add_project, create_definition, create_instance, database_text, running_server

from vdb_grpc.crypto import ApiKeyCipher
from vdb_grpc.v1 import admin_pb2 as pb
from vdb_grpc.v1 import api_standard_pb2, user_pb2
from vdb_grpc.v1 import llm_definition_pb2 as dpb

C = grpc.StatusCode


def legacy_blob(secret: str, plaintext: str) -> bytes:
    """A key encrypted the way the Go service did: nonce || AES-GCM(sha256(secret)), no associated data."""
    nonce = os.urandom(12)
    return nonce + AESGCM(hashlib.sha256(secret.encode()).digest()).encrypt(nonce, plaintext.encode(), None)


@pytest.mark.allow_reset  # the refusals below are about the caller, not about the server's reset opt-in
async def test_admin_rpcs_refuse_everyone_but_the_admin(vdb):
    alice = await vdb.create_user("alice")
    await create_instance(vdb, alice, "emb", api_key="sk-a")  # alice is an owner: still no admin rights
    calls = [
        (vdb.admin.SanityCheck, pb.SanityCheckRequest()),
        (vdb.admin.ResetDatabase, pb.ResetDatabaseRequest(confirm="RESET")),
        (vdb.admin.ReencryptApiKeys, pb.ReencryptApiKeysRequest()),
    ]
    for method, request in calls:
        err = await rpc_error(method(request, metadata=bearer(alice)), C.PERMISSION_DENIED)
        assert "admin" in err.details()
        await rpc_error(method(request, metadata=ANON), C.UNAUTHENTICATED)
        await rpc_error(method(request, metadata=bearer("0" * 64)), C.UNAUTHENTICATED)
    assert await vdb.pool.fetchval("SELECT count(*) FROM users") == 2  # nothing was reset


async def test_sanity_check_reports_problems_and_changes_nothing(vdb):
    clean = await vdb.admin.SanityCheck(pb.SanityCheckRequest(), metadata=ADMIN)
    assert clean.ok and list(clean.findings) == []

    alice = await vdb.create_user("alice")
    await create_instance(vdb, alice, "good", api_key="sk-good")
    await create_instance(vdb, alice, "plain")
    await create_instance(vdb, alice, "legacy")
    await create_instance(vdb, alice, "broken")
    await create_instance(vdb, alice, "old-key")
    await add_project(vdb.pool, "alice", "fine", "alice", "good", embeddings=2)
    pid = await add_project(vdb.pool, "alice", "mixed", "alice", "good", embeddings=1)
    await vdb.pool.execute(
        "INSERT INTO embeddings (text_id, owner, project_id, vector, vector_dim) VALUES ('x', 'alice', $1, '[1,2]', 2)",
        pid,
    )
    liar = await add_project(vdb.pool, "alice", "liar", "alice", "good")
    await vdb.pool.execute(
        "INSERT INTO embeddings (text_id, owner, project_id, vector, vector_dim) VALUES ('y', 'alice', $1, '[1,2,3]', 4)",
        liar,
    )
    await vdb.pool.execute("INSERT INTO projects (project_handle, owner) VALUES ('orphan', 'alice')")
    await vdb.pool.execute("UPDATE llm_service_instances SET api_key = 'sk-plaintext' WHERE instance_handle = 'plain'")
    await vdb.pool.execute(
        "UPDATE llm_service_instances SET api_key_encrypted = $1 WHERE instance_handle = 'legacy'",
        legacy_blob(ENCRYPTION_KEY, "sk-legacy"),
    )
    # a ciphertext bound to another instance does not decrypt here
    await vdb.pool.execute(
        "UPDATE llm_service_instances SET api_key_encrypted = $1 WHERE instance_handle = 'broken'",
        ApiKeyCipher(ENCRYPTION_KEY).encrypt("sk-x", owner="alice", instance_handle="good"),
    )
    old = ApiKeyCipher("an-old-key-0123456789-0123456789-0123456789")
    await vdb.pool.execute(
        "UPDATE llm_service_instances SET api_key_encrypted = $1 WHERE instance_handle = 'old-key'",
        old.encrypt("sk-old", owner="alice", instance_handle="old-key"),
    )
    before = await database_text(vdb.pool)

    report = await vdb.admin.SanityCheck(pb.SanityCheckRequest(), metadata=ADMIN)
    assert not report.ok
    found = sorted((f.check, f.subject) for f in report.findings)
    assert found == [
        ("API_KEY_NEEDS_REENCRYPTION", "instance:alice/legacy"),
        ("API_KEY_UNDECRYPTABLE", "instance:alice/broken"),
        ("API_KEY_UNDECRYPTABLE", "instance:alice/old-key"),
        ("EMBEDDING_DIMENSION_MISMATCH", "project:alice/liar"),
        ("EMBEDDING_DIMENSION_MISMATCH", "project:alice/mixed"),
        ("EMBEDDING_VECTOR_DIM_INCONSISTENT", "project:alice/liar"),
        ("PLAINTEXT_API_KEY", "instance:alice/plain"),
        ("PROJECT_WITHOUT_INSTANCE", "project:alice/orphan"),
    ]
    text = "\n".join(f.description for f in report.findings)
    assert "vector_dim 2" in text and "3 dimensions" in text
    for secret in ("sk-good", "sk-plaintext", "sk-legacy", "sk-x", "sk-old"):
        assert secret not in str(report)
    assert await database_text(vdb.pool) == before  # read only

    # at most 100 findings per check, then a count of the rest
    await vdb.pool.execute(
        "INSERT INTO projects (project_handle, owner) SELECT 'orphan' || n, 'alice' FROM generate_series(1, 101) n"
    )
    report = await vdb.admin.SanityCheck(pb.SanityCheckRequest(), metadata=ADMIN)
    orphans = [f for f in report.findings if f.check == "PROJECT_WITHOUT_INSTANCE"]
    assert len(orphans) == 101 and orphans[-1].description == "… and 2 more projects"


async def test_sanity_check_with_previous_key_and_without_any_key(db_uri, server_settings):
    old_secret = "an-old-key-0123456789-0123456789-0123456789"
    async with running_server(db_uri, server_settings.replace(encryption_key=old_secret)) as vdb:
        alice = await vdb.create_user("alice")
        await create_instance(vdb, alice, "emb", api_key="sk-1")
    rotated = server_settings.replace(encryption_key_previous=(old_secret,))
    async with running_server(db_uri, rotated) as vdb:
        report = await vdb.admin.SanityCheck(pb.SanityCheckRequest(), metadata=ADMIN)
        assert [(f.check, f.subject) for f in report.findings] == [("API_KEY_NEEDS_REENCRYPTION", "instance:alice/emb")]
    async with running_server(db_uri, server_settings.replace(encryption_key=None)) as vdb:
        report = await vdb.admin.SanityCheck(pb.SanityCheckRequest(), metadata=ADMIN)
        assert [(f.check, f.subject) for f in report.findings] == [("ENCRYPTION_KEY_MISSING", "setting:ENCRYPTION_KEY")]
        assert not report.ok
        err = await rpc_error(
            vdb.admin.ReencryptApiKeys(pb.ReencryptApiKeysRequest(), metadata=ADMIN), C.FAILED_PRECONDITION
        )
        assert "ENCRYPTION_KEY" in err.details()


async def test_reset_database_is_refused_unless_the_server_allows_it(vdb):
    alice = await vdb.create_user("alice")
    await create_instance(vdb, alice, "emb", api_key="sk-a")
    for confirm in ("RESET", ""):  # the opt-in is checked before (and besides) the confirmation phrase
        err = await rpc_error(
            vdb.admin.ResetDatabase(pb.ResetDatabaseRequest(confirm=confirm), metadata=ADMIN), C.FAILED_PRECONDITION
        )
        assert "VDB_ALLOW_RESET=true" in err.details()
        [failure] = status_details(err)
        assert failure.violations[0].subject == "setting:VDB_ALLOW_RESET"
    err = await rpc_error(
        vdb.admin.ResetDatabase(pb.ResetDatabaseRequest(confirm="RESET"), metadata=bearer(alice)), C.PERMISSION_DENIED
    )
    assert await vdb.pool.fetchval("SELECT count(*) FROM users") == 2  # nothing was reset
    assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 1


@pytest.mark.allow_reset
async def test_reset_database_needs_confirmation_and_keeps_system_data(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    await create_definition(vdb, alice, "a-def")
    await vdb.definitions.ShareDefinition(
        dpb.ShareDefinitionRequest(owner="_system", definition_handle="openai-small", share={"user_handle": "bobby"}),
        metadata=ADMIN,
    )
    await create_instance(vdb, alice, "emb", api_key="sk-a")
    await add_project(vdb.pool, "bobby", "proj", "alice", "emb", embeddings=3)
    await vdb.standards.CreateApiStandard(
        api_standard_pb2.CreateApiStandardRequest(
            api_standard=api_standard_pb2.ApiStandard(api_standard_handle="custom", key_method="auth_bearer")
        ),
        metadata=ADMIN,
    )
    for confirm in ("", "reset", "RESET ", "yes"):
        err = await rpc_error(
            vdb.admin.ResetDatabase(pb.ResetDatabaseRequest(confirm=confirm), metadata=ADMIN), C.INVALID_ARGUMENT
        )
        assert field_violations(err)[0][0] == "confirm"
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings") == 3

    resp = await vdb.admin.ResetDatabase(pb.ResetDatabaseRequest(confirm="RESET"), metadata=ADMIN)
    assert (
        resp.deleted_users,
        resp.deleted_projects,
        resp.deleted_embeddings,
        resp.deleted_instances,
        resp.deleted_definitions,
    ) == (2, 1, 3, 1, 1)
    for table in ("projects", "embeddings", "llm_service_instances", "llm_service_definitions_shared_with"):
        assert await vdb.pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await vdb.pool.fetch("SELECT user_handle FROM users") == [("_system",)]
    defs = await vdb.pool.fetch("SELECT owner, definition_handle FROM llm_service_definitions ORDER BY 1, 2")
    assert [tuple(r) for r in defs] == BUILTIN
    standards = {r[0] for r in await vdb.pool.fetch("SELECT api_standard_handle FROM api_standards")}
    assert {"openai", "cohere", "gemini", "custom"} <= standards
    assert await vdb.pool.fetchval("SELECT count(*) FROM key_methods") == 4
    assert await vdb.pool.fetchval("SELECT count(*) FROM vdb_roles") >= 3
    for key in (alice, bobby):  # their keys are gone with them
        await rpc_error(
            vdb.users.GetUser(user_pb2.GetUserRequest(user_handle="alice"), metadata=bearer(key)), C.UNAUTHENTICATED
        )
    # the service works as before on the emptied database
    again = await vdb.admin.SanityCheck(pb.SanityCheckRequest(), metadata=ADMIN)
    assert again.ok
    await vdb.create_user("alice")
