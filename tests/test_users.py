"""UserService over real gRPC: every RPC's success path and each refusal."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ANON, bearer, field_violations, rpc_error, status_details

from vdb_grpc.v1 import user_pb2 as pb

C = grpc.StatusCode


def new_user(handle: str, email: str | None = None, name: str = "") -> pb.CreateUserRequest:
    return pb.CreateUserRequest(user=pb.User(user_handle=handle, name=name, email=f"{handle}@example.org" if email is None else email))


async def test_create_user_returns_key_once_and_key_authenticates(vdb):
    resp = await vdb.users.CreateUser(new_user("alice", name="Alice"), metadata=ADMIN)
    assert resp.user.user_handle == "alice" and resp.user.name == "Alice"
    assert len(resp.api_key) == 64 and int(resp.api_key, 16) >= 0
    got = await vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(resp.api_key))
    assert got.user.email == "alice@example.org"
    # only the hash is stored
    stored = await vdb.pool.fetchval("SELECT vdb_api_key FROM users WHERE user_handle = 'alice'")
    assert stored != resp.api_key and resp.api_key not in stored


async def test_user_keys_differ(vdb):
    k1 = await vdb.create_user("alice")
    k2 = await vdb.create_user("bobby")
    assert k1 != k2


@pytest.mark.parametrize(
    ("metadata", "code"),
    [(ANON, C.UNAUTHENTICATED), (bearer("0" * 64), C.UNAUTHENTICATED), (bearer(""), C.UNAUTHENTICATED)],
)
async def test_create_user_needs_admin_key(vdb, metadata, code):
    await rpc_error(vdb.users.CreateUser(new_user("alice"), metadata=metadata), code)


async def test_create_user_refused_for_plain_user(vdb):
    key = await vdb.create_user("alice")
    err = await rpc_error(vdb.users.CreateUser(new_user("bobby"), metadata=bearer(key)), C.PERMISSION_DENIED)
    assert "admin" in err.details()


async def test_malformed_authorization_header(vdb):
    await rpc_error(
        vdb.users.ListUsers(pb.ListUsersRequest(), metadata=(("authorization", "Basic abc"),)), C.UNAUTHENTICATED
    )


@pytest.mark.parametrize(
    "handle", ["_system", "_x_y", "admin", "public", "*", "ab", "a" * 21, "with/slash", "sp ace", ""]
)
async def test_create_user_invalid_or_reserved_handle(vdb, handle):
    err = await rpc_error(
        vdb.users.CreateUser(new_user(handle, email="x@example.org"), metadata=ADMIN), C.INVALID_ARGUMENT
    )
    assert field_violations(err)[0][0] == "user.user_handle"


@pytest.mark.parametrize("email", ["", "a@b", "no-at-sign", "two@@example.org", "a@b@c.org", "x" * 95 + "@ex.org"])
async def test_create_user_invalid_email(vdb, email):
    err = await rpc_error(vdb.users.CreateUser(new_user("alice", email=email), metadata=ADMIN), C.INVALID_ARGUMENT)
    assert field_violations(err) == [("user.email", "must be 5-100 characters with exactly one '@'")]


async def test_create_user_name_too_long(vdb):
    await rpc_error(vdb.users.CreateUser(new_user("alice", name="n" * 51), metadata=ADMIN), C.INVALID_ARGUMENT)


async def test_create_user_duplicate_handle_and_email(vdb):
    await vdb.create_user("alice", email="a@example.org")
    err = await rpc_error(
        vdb.users.CreateUser(new_user("alice", email="other@example.org"), metadata=ADMIN), C.ALREADY_EXISTS
    )
    assert "alice" in err.details()
    err = await rpc_error(
        vdb.users.CreateUser(new_user("bobby", email="a@example.org"), metadata=ADMIN), C.ALREADY_EXISTS
    )
    assert "email" in err.details()


async def test_system_user_cannot_authenticate_or_be_created(vdb):
    # The stored hash of _system is a value no key can produce; try the obvious candidates.
    stored = await vdb.pool.fetchval("SELECT vdb_api_key FROM users WHERE user_handle = '_system'")
    for key in (stored, stored.strip(), "-" * 64, "_system"):
        await rpc_error(
            vdb.users.GetUser(pb.GetUserRequest(user_handle="_system"), metadata=bearer(key)), C.UNAUTHENTICATED
        )
    await rpc_error(vdb.users.CreateUser(new_user("_system"), metadata=ADMIN), C.INVALID_ARGUMENT)


async def test_get_user_self_admin_and_others(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    assert (await vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=ADMIN)).user.user_handle == "alice"
    await rpc_error(
        vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(bobby)), C.PERMISSION_DENIED
    )
    # permission before existence: a user asking for an absent user is denied, not told it is missing
    await rpc_error(
        vdb.users.GetUser(pb.GetUserRequest(user_handle="nobody"), metadata=bearer(alice)), C.PERMISSION_DENIED
    )
    err = await rpc_error(vdb.users.GetUser(pb.GetUserRequest(user_handle="nobody"), metadata=ADMIN), C.NOT_FOUND)
    assert [d.resource_name for d in status_details(err)] == ["nobody"]
    await rpc_error(vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=ANON), C.UNAUTHENTICATED)


async def test_get_user_memberships(vdb):
    await vdb.create_user("alice")
    await vdb.create_user("bobby")
    async with vdb.pool.acquire() as conn:
        iid = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ('emb', 'alice', 'http://x', 'openai', 'm', 3) RETURNING instance_id"
        )
        pid = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ('proj', 'alice', $1)"
            " RETURNING project_id",
            iid,
        )
        await conn.execute(
            "INSERT INTO projects_shared_with (user_handle, project_id, role) VALUES ('bobby', $1, 'reader')", pid
        )
        await conn.execute(
            "INSERT INTO llm_service_instances_shared_with (user_handle, instance_id, role) VALUES ('bobby', $1, 'editor')",
            iid,
        )
    alice = (await vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=ADMIN)).user
    assert [(m.owner, m.handle, m.role) for m in alice.projects] == [("alice", "proj", "owner")]
    assert [(m.owner, m.handle, m.role) for m in alice.instances] == [("alice", "emb", "owner")]
    bobby = (await vdb.users.GetUser(pb.GetUserRequest(user_handle="bobby"), metadata=ADMIN)).user
    assert [(m.owner, m.handle, m.role) for m in bobby.projects] == [("alice", "proj", "reader")]
    assert [(m.owner, m.handle, m.role) for m in bobby.instances] == [("alice", "emb", "editor")]
    assert list(bobby.definitions) == []


async def test_list_users_pages_and_permissions(vdb):
    handles = [f"user{i:02d}" for i in range(7)]
    for h in handles:
        await vdb.create_user(h)
    seen, token = [], ""
    while True:
        resp = await vdb.users.ListUsers(pb.ListUsersRequest(page_size=3, page_token=token), metadata=ADMIN)
        seen += [u.user_handle for u in resp.users]
        token = resp.next_page_token
        if not token:
            break
    assert seen == handles  # ordered, each once, _system hidden
    key = await vdb.create_user("alice")
    await rpc_error(vdb.users.ListUsers(pb.ListUsersRequest(), metadata=bearer(key)), C.PERMISSION_DENIED)
    await rpc_error(vdb.users.ListUsers(pb.ListUsersRequest(), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(vdb.users.ListUsers(pb.ListUsersRequest(page_token="garbage!"), metadata=ADMIN), C.INVALID_ARGUMENT)
    await rpc_error(vdb.users.ListUsers(pb.ListUsersRequest(page_size=-1), metadata=ADMIN), C.INVALID_ARGUMENT)


async def test_list_users_empty(vdb):
    resp = await vdb.users.ListUsers(pb.ListUsersRequest(), metadata=ADMIN)
    assert list(resp.users) == [] and resp.next_page_token == ""


async def test_update_user_with_mask_and_without(vdb):
    key = await vdb.create_user("alice", name="Alice")
    resp = await vdb.users.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(user_handle="alice", name="ignored", email="new@example.org"),
            update_mask=FieldMask(paths=["email"]),
        ),
        metadata=bearer(key),
    )
    assert (resp.user.name, resp.user.email) == ("Alice", "new@example.org")
    resp = await vdb.users.UpdateUser(
        pb.UpdateUserRequest(user=pb.User(user_handle="alice", name="Al")), metadata=ADMIN
    )
    assert (resp.user.name, resp.user.email, resp.created) == ("Al", "new@example.org", False)


async def test_update_user_refusals(vdb):
    alice = await vdb.create_user("alice", email="a@example.org")
    bobby = await vdb.create_user("bobby", email="b@example.org")
    upd = pb.UpdateUserRequest(user=pb.User(user_handle="alice", name="X"))
    await rpc_error(vdb.users.UpdateUser(upd, metadata=bearer(bobby)), C.PERMISSION_DENIED)
    await rpc_error(vdb.users.UpdateUser(upd, metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.users.UpdateUser(
            pb.UpdateUserRequest(user=pb.User(user_handle="alice", email="b@example.org")), metadata=bearer(alice)
        ),
        C.ALREADY_EXISTS,
    )
    await rpc_error(
        vdb.users.UpdateUser(
            pb.UpdateUserRequest(user=pb.User(user_handle="alice", email="bad")), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )
    err = await rpc_error(
        vdb.users.UpdateUser(
            pb.UpdateUserRequest(user=pb.User(user_handle="alice"), update_mask=FieldMask(paths=["user_handle"])),
            metadata=ADMIN,
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "update_mask"
    await rpc_error(
        vdb.users.UpdateUser(pb.UpdateUserRequest(user=pb.User(user_handle="nobody", name="x")), metadata=ADMIN),
        C.NOT_FOUND,
    )
    await rpc_error(
        vdb.users.UpdateUser(pb.UpdateUserRequest(user=pb.User(user_handle="_system", name="x")), metadata=ADMIN),
        C.FAILED_PRECONDITION,
    )


async def test_update_user_allow_missing_creates_for_admin_only(vdb):
    req = pb.UpdateUserRequest(user=pb.User(user_handle="carol", name="C", email="c@example.org"), allow_missing=True)
    resp = await vdb.users.UpdateUser(req, metadata=ADMIN)
    assert resp.created and len(resp.api_key) == 64
    await vdb.users.GetUser(pb.GetUserRequest(user_handle="carol"), metadata=bearer(resp.api_key))
    again = await vdb.users.UpdateUser(req, metadata=ADMIN)  # idempotent: now an update
    assert not again.created and again.api_key == ""
    alice = await vdb.create_user("alice")
    other = pb.UpdateUserRequest(user=pb.User(user_handle="dave1", email="d@example.org"), allow_missing=True)
    await rpc_error(vdb.users.UpdateUser(other, metadata=bearer(alice)), C.PERMISSION_DENIED)
    bad = pb.UpdateUserRequest(user=pb.User(user_handle="admin", email="d@example.org"), allow_missing=True)
    await rpc_error(vdb.users.UpdateUser(bad, metadata=ADMIN), C.INVALID_ARGUMENT)


async def test_rotate_key(vdb):
    old = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    resp = await vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="alice"), metadata=bearer(old))
    assert resp.user_handle == "alice" and len(resp.api_key) == 64 and resp.api_key != old
    await rpc_error(vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(old)), C.UNAUTHENTICATED)
    await vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(resp.api_key))
    await rpc_error(
        vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="alice"), metadata=bearer(bobby)),
        C.PERMISSION_DENIED,
    )
    await rpc_error(vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="nobody"), metadata=ADMIN), C.NOT_FOUND)
    await rpc_error(
        vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="_system"), metadata=ADMIN), C.FAILED_PRECONDITION
    )
    await rpc_error(
        vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="alice"), metadata=ANON), C.UNAUTHENTICATED
    )
    admin_rotated = await vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="alice"), metadata=ADMIN)
    await rpc_error(
        vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(resp.api_key)), C.UNAUTHENTICATED
    )
    await vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(admin_rotated.api_key))


async def test_delete_user_self_admin_others(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    await rpc_error(
        vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="alice"), metadata=bearer(bobby)), C.PERMISSION_DENIED
    )
    await rpc_error(vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="alice"), metadata=ANON), C.UNAUTHENTICATED)
    await vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="alice"), metadata=bearer(alice))
    await rpc_error(
        vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(alice)), C.UNAUTHENTICATED
    )
    await rpc_error(vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="alice"), metadata=ADMIN), C.NOT_FOUND)
    await vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="bobby"), metadata=ADMIN)
    await rpc_error(
        vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="_system"), metadata=ADMIN), C.FAILED_PRECONDITION
    )


async def _instance_used_by_other(vdb) -> None:
    async with vdb.pool.acquire() as conn:
        iid = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ('emb', 'alice', 'http://x', 'openai', 'm', 3) RETURNING instance_id"
        )
        own = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ('mine', 'alice', $1) RETURNING project_id",
            iid,
        )
        other = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ('theirs', 'bobby', $1) RETURNING project_id",
            iid,
        )
        for pid, owner in ((own, "alice"), (other, "bobby")):
            await conn.execute(
                "INSERT INTO embeddings (text_id, owner, project_id, llm_service_instance_id, vector, vector_dim)"
                " VALUES ('t1', $1, $2, $3, '[1,2,3]'::halfvec, 3)",
                owner,
                pid,
                iid,
            )


async def test_delete_user_refused_when_other_project_depends_then_forced(vdb):
    await vdb.create_user("alice")
    await vdb.create_user("bobby")
    await _instance_used_by_other(vdb)
    err = await rpc_error(
        vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="alice"), metadata=ADMIN), C.FAILED_PRECONDITION
    )
    assert "bobby/theirs" in err.details()
    assert [v.subject for d in status_details(err) for v in d.violations] == ["project:bobby/theirs"]
    assert await vdb.pool.fetchval("SELECT count(*) FROM projects") == 2  # nothing changed
    resp = await vdb.users.DeleteUser(pb.DeleteUserRequest(user_handle="alice", force=True), metadata=ADMIN)
    assert list(resp.detached_projects) == ["bobby/theirs"]
    rows = await vdb.pool.fetch("SELECT owner, project_handle, llm_service_instance_id FROM projects")
    assert [(r["owner"], r["project_handle"], r["llm_service_instance_id"]) for r in rows] == [
        ("bobby", "theirs", None)
    ]
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings WHERE owner = 'bobby'") == 1  # kept
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings WHERE owner = 'alice'") == 0
    assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 0


async def test_keys_never_logged(vdb, caplog):
    caplog.set_level(logging.DEBUG)
    key = await vdb.create_user("alice")
    rotated = (
        await vdb.users.RotateUserKey(pb.RotateUserKeyRequest(user_handle="alice"), metadata=bearer(key))
    ).api_key
    await rpc_error(vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(key)), C.UNAUTHENTICATED)
    created = await vdb.users.UpdateUser(
        pb.UpdateUserRequest(user=pb.User(user_handle="carol", email="c@example.org"), allow_missing=True),
        metadata=ADMIN,
    )
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    for secret in (key, rotated, created.api_key):
        assert secret not in text
    # and later responses never carry a key
    got = await vdb.users.GetUser(pb.GetUserRequest(user_handle="alice"), metadata=bearer(rotated))
    assert key not in str(got) and rotated not in str(got)
    listed = await vdb.users.ListUsers(pb.ListUsersRequest(), metadata=ADMIN)
    assert all(s not in str(listed) for s in (key, rotated, created.api_key))
