"""LlmInstanceService over real gRPC: every RPC with each principal it must allow and refuse."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ANON, ENCRYPTION_KEY, bearer, field_violations, rpc_error, status_details
from llm_helpers import (
    add_project,
    create_definition,
    create_instance,
    instance,
    running_server,
    share_instance,
    stored_key,
)

from vdb_grpc.crypto import ApiKeyCipher
from vdb_grpc.v1 import common_pb2, user_pb2
from vdb_grpc.v1 import llm_definition_pb2 as dpb
from vdb_grpc.v1 import llm_instance_pb2 as pb

C = grpc.StatusCode
CIPHER = ApiKeyCipher(ENCRYPTION_KEY)


def get(owner: str, handle: str) -> pb.GetInstanceRequest:
    return pb.GetInstanceRequest(owner=owner, instance_handle=handle)


def from_definition(reference: str, **fields) -> pb.CreateInstanceFromDefinitionRequest:
    return pb.CreateInstanceFromDefinitionRequest(definition=reference, instance=pb.LlmInstance(**fields))


def share(owner: str, handle: str, user: str, role: str) -> pb.ShareInstanceRequest:
    return pb.ShareInstanceRequest(
        owner=owner, instance_handle=handle, share=common_pb2.Share(user_handle=user, role=role)
    )


async def decrypted(vdb, owner: str, handle: str) -> str | None:
    blob, legacy = await stored_key(vdb.pool, owner, handle)
    assert legacy is None
    return None if blob is None else CIPHER.decrypt(blob, owner=owner, instance_handle=handle)


async def three_users(vdb) -> tuple[str, str, str, str]:
    """alice owns "emb" (with a key); bobby is its editor, carol its reader, dave a stranger."""
    keys = [await vdb.create_user(h) for h in ("alice", "bobby", "carol", "dave1")]
    await create_instance(vdb, keys[0], "emb", api_key="sk-alice-1")
    await share_instance(vdb, "alice", "emb", "bobby", "editor")
    await share_instance(vdb, "alice", "emb", "carol", "reader")
    return keys[0], keys[1], keys[2], keys[3]


async def test_create_instance_principals_and_key(vdb):
    alice = await vdb.create_user("alice")
    await vdb.create_user("bobby")
    got = await create_instance(vdb, alice, "emb", api_key="sk-one")
    assert (got.owner, got.instance_handle, got.has_api_key, got.access_role, got.definition) == (
        "alice",
        "emb",
        True,
        "owner",
        "",
    )
    assert got.api_key == ""  # input only
    assert await decrypted(vdb, "alice", "emb") == "sk-one"
    nokey = await create_instance(vdb, alice, "nokey")
    assert not nokey.has_api_key and await decrypted(vdb, "alice", "nokey") is None
    by_admin = await vdb.instances.CreateInstance(
        pb.CreateInstanceRequest(instance=instance("given", owner="bobby", api_key="sk-b")), metadata=ADMIN
    )
    assert (by_admin.instance.owner, by_admin.instance.access_role, by_admin.instance.has_api_key) == (
        "bobby",
        "admin",
        True,
    )
    refusals = [
        (instance("x-inst"), ADMIN, C.INVALID_ARGUMENT),  # the admin must name the owner
        (instance("x-inst", owner="bobby"), bearer(alice), C.PERMISSION_DENIED),
        (instance("x-inst", owner="_system"), ADMIN, C.INVALID_ARGUMENT),
        (instance("x-inst"), ANON, C.UNAUTHENTICATED),
        (instance("emb"), bearer(alice), C.ALREADY_EXISTS),
        (instance("x-inst", owner="nobody"), ADMIN, C.NOT_FOUND),
    ]
    for message, metadata, code in refusals:
        await rpc_error(
            vdb.instances.CreateInstance(pb.CreateInstanceRequest(instance=message), metadata=metadata), code
        )
    # every value is required
    for overrides, field in [
        ({"dimensions": 0}, "instance.dimensions"),
        ({"context_limit": 0}, "instance.context_limit"),
        ({"endpoint": ""}, "instance.endpoint"),
        ({"endpoint": "mailto:x@example.org"}, "instance.endpoint"),
        ({"model": ""}, "instance.model"),
        ({"api_standard": ""}, "instance.api_standard"),
        ({"instance_handle": ""}, "instance.instance_handle"),
        ({"instance_handle": "x" * 21}, "instance.instance_handle"),
        ({"api_key": "k" * 4097}, "instance.api_key"),
    ]:
        values = {"instance_handle": "bad-inst", **overrides}
        handle = values.pop("instance_handle")
        err = await rpc_error(
            vdb.instances.CreateInstance(
                pb.CreateInstanceRequest(instance=instance(handle, **values)), metadata=bearer(alice)
            ),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == field, overrides.keys()
    err = await rpc_error(
        vdb.instances.CreateInstance(
            pb.CreateInstanceRequest(instance=instance("bad-inst", api_standard="nosuch")), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err) == [("instance.api_standard", "unknown API standard 'nosuch'")]
    assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 3


async def test_create_instance_from_definition(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    got = (
        await vdb.instances.CreateInstanceFromDefinition(
            from_definition("_system/openai-small", instance_handle="my-openai", api_key="sk-from-def"),
            metadata=bearer(alice),
        )
    ).instance
    assert (got.owner, got.endpoint, got.api_standard, got.model, got.dimensions, got.context_limit) == (
        "alice",
        "https://api.openai.com/v1/embeddings",
        "openai",
        "text-embedding-3-small",
        1536,
        8191,
    )
    assert (got.definition, got.has_api_key, got.access_role) == ("_system/openai-small", True, "owner")
    assert await decrypted(vdb, "alice", "my-openai") == "sk-from-def"
    # values given override the definition's; the instance handle defaults to the definition's
    got = (
        await vdb.instances.CreateInstanceFromDefinition(
            from_definition("_system/cohere-v4", model="embed-v4.0-custom", dimensions=256, description="mine"),
            metadata=bearer(alice),
        )
    ).instance
    assert (got.instance_handle, got.model, got.dimensions, got.description, got.api_standard) == (
        "cohere-v4",
        "embed-v4.0-custom",
        256,
        "mine",
        "cohere",
    )
    assert not got.has_api_key
    # a built-in handle longer than an instance handle may be must be replaced
    err = await rpc_error(
        vdb.instances.CreateInstanceFromDefinition(
            from_definition("_system/cohere-multilingual-v3"), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "instance.instance_handle"
    await vdb.instances.CreateInstanceFromDefinition(
        from_definition("_system/cohere-multilingual-v3", instance_handle="cohere-ml"), metadata=bearer(alice)
    )
    # a bare handle names a definition of the instance's owner
    await create_definition(vdb, bobby, "b-private", dimensions=9)
    got = (
        await vdb.instances.CreateInstanceFromDefinition(
            from_definition("b-private", instance_handle="bb1"), metadata=bearer(bobby)
        )
    ).instance
    assert (got.definition, got.dimensions) == ("bobby/b-private", 9)
    got = (
        await vdb.instances.CreateInstanceFromDefinition(
            from_definition("b-private", owner="bobby", instance_handle="bb2"), metadata=ADMIN
        )
    ).instance
    assert (got.owner, got.definition, got.access_role) == ("bobby", "bobby/b-private", "admin")
    # the caller must be able to read the definition: permission before existence
    await rpc_error(
        vdb.instances.CreateInstanceFromDefinition(
            from_definition("bobby/b-private", instance_handle="xx1"), metadata=bearer(alice)
        ),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.instances.CreateInstanceFromDefinition(
            from_definition("bobby/absent", instance_handle="xx1"), metadata=bearer(alice)
        ),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.instances.CreateInstanceFromDefinition(
            from_definition("absent", instance_handle="xx1"), metadata=bearer(alice)
        ),
        C.NOT_FOUND,
    )
    await rpc_error(
        vdb.instances.CreateInstanceFromDefinition(
            from_definition("_system/absent", instance_handle="xx1"), metadata=bearer(alice)
        ),
        C.NOT_FOUND,
    )
    # shared or public: readable, so usable
    await vdb.definitions.ShareDefinition(
        dpb.ShareDefinitionRequest(definition_handle="b-private", share=common_pb2.Share(user_handle="alice")),
        metadata=bearer(bobby),
    )
    got = (
        await vdb.instances.CreateInstanceFromDefinition(
            from_definition("bobby/b-private", instance_handle="xx1"), metadata=bearer(alice)
        )
    ).instance
    assert got.definition == "bobby/b-private"
    await create_definition(vdb, bobby, "b-public", is_public=True)
    await vdb.instances.CreateInstanceFromDefinition(
        from_definition("bobby/b-public", instance_handle="xx2"), metadata=bearer(alice)
    )
    # other refusals
    for request, metadata, code in [
        (from_definition("", instance_handle="xx3"), bearer(alice), C.INVALID_ARGUMENT),
        (from_definition("a/b/c", instance_handle="xx3"), bearer(alice), C.INVALID_ARGUMENT),
        (from_definition("_system/openai-small", instance_handle="xx3"), ANON, C.UNAUTHENTICATED),
        (
            from_definition("_system/openai-small", instance_handle="xx3", owner="bobby"),
            bearer(alice),
            C.PERMISSION_DENIED,
        ),
        (from_definition("_system/openai-small", instance_handle="xx3"), ADMIN, C.INVALID_ARGUMENT),
        (from_definition("_system/openai-small", instance_handle="my-openai"), bearer(alice), C.ALREADY_EXISTS),
        (
            from_definition("_system/openai-small", instance_handle="xx3", dimensions=-1),
            bearer(alice),
            C.INVALID_ARGUMENT,
        ),
    ]:
        await rpc_error(vdb.instances.CreateInstanceFromDefinition(request, metadata=metadata), code)


async def test_get_instance_each_principal(vdb):
    alice, bobby, carol, dave = await three_users(vdb)
    for metadata, role in (
        (bearer(alice), "owner"),
        (bearer(bobby), "editor"),
        (bearer(carol), "reader"),
        (ADMIN, "admin"),
    ):
        got = (await vdb.instances.GetInstance(get("alice", "emb"), metadata=metadata)).instance
        assert (got.owner, got.instance_handle, got.access_role, got.has_api_key, got.api_key) == (
            "alice",
            "emb",
            role,
            True,
            "",
        )
    assert (await vdb.instances.GetInstance(get("", "emb"), metadata=bearer(alice))).instance.owner == "alice"
    await rpc_error(vdb.instances.GetInstance(get("alice", "emb"), metadata=bearer(dave)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.GetInstance(get("alice", "absent"), metadata=bearer(dave)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.GetInstance(get("alice", "absent"), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    err = await rpc_error(vdb.instances.GetInstance(get("alice", "absent"), metadata=bearer(alice)), C.NOT_FOUND)
    assert [d.resource_name for d in status_details(err)] == ["alice/absent"]
    await rpc_error(vdb.instances.GetInstance(get("alice", "absent"), metadata=ADMIN), C.NOT_FOUND)
    await rpc_error(vdb.instances.GetInstance(get("", "emb"), metadata=ADMIN), C.INVALID_ARGUMENT)
    await rpc_error(vdb.instances.GetInstance(get("alice", "emb"), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(vdb.instances.GetInstance(get("alice", "bad/handle"), metadata=bearer(alice)), C.INVALID_ARGUMENT)


async def test_list_instances_owned_and_shared_once_with_roles(vdb):
    alice, bobby, carol, dave = await three_users(vdb)
    await create_instance(vdb, alice, "emb2")
    await create_instance(vdb, bobby, "b-own")
    await create_instance(vdb, carol, "c-own")
    await share_instance(vdb, "carol", "c-own", "bobby", "reader")
    await share_instance(vdb, "carol", "c-own", "bobby", "editor")  # re-share: one row, new role

    async def listed(metadata, page_size: int = 0) -> list[tuple[str, str, str]]:
        out, token = [], ""
        while True:
            resp = await vdb.instances.ListInstances(
                pb.ListInstancesRequest(page_size=page_size, page_token=token), metadata=metadata
            )
            out += [(i.owner, i.instance_handle, i.access_role) for i in resp.instances]
            token = resp.next_page_token
            if not token:
                return out

    expected = [("alice", "emb", "editor"), ("bobby", "b-own", "owner"), ("carol", "c-own", "editor")]
    assert await listed(bearer(bobby)) == expected
    assert await listed(bearer(bobby), page_size=1) == expected
    assert await listed(bearer(alice)) == [("alice", "emb", "owner"), ("alice", "emb2", "owner")]
    assert await listed(bearer(carol)) == [("alice", "emb", "reader"), ("carol", "c-own", "owner")]
    assert await listed(bearer(dave)) == []
    assert await listed(ADMIN, page_size=2) == [
        ("alice", "emb", "admin"),
        ("alice", "emb2", "admin"),
        ("bobby", "b-own", "admin"),
        ("carol", "c-own", "admin"),
    ]
    resp = await vdb.instances.ListInstances(pb.ListInstancesRequest(), metadata=bearer(alice))
    assert all(i.api_key == "" for i in resp.instances) and [i.has_api_key for i in resp.instances] == [True, False]
    await rpc_error(vdb.instances.ListInstances(pb.ListInstancesRequest(), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.instances.ListInstances(pb.ListInstancesRequest(page_token="x"), metadata=bearer(alice)), C.INVALID_ARGUMENT
    )


async def test_update_instance_mask_keeps_key_and_roles(vdb):
    alice, bobby, carol, dave = await three_users(vdb)
    blob_before, _ = await stored_key(vdb.pool, "alice", "emb")

    # a masked update that does not name api_key keeps the stored key byte for byte
    resp = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(
            instance=instance("emb", owner="alice", description="new text", model="ignored"),
            update_mask=FieldMask(paths=["description"]),
        ),
        metadata=bearer(alice),
    )
    assert (resp.instance.description, resp.instance.model, resp.instance.has_api_key, resp.created) == (
        "new text",
        "emb-model",
        True,
        False,
    )
    assert (await stored_key(vdb.pool, "alice", "emb"))[0] == blob_before
    # without a mask: the fields set; the key is untouched too
    resp = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(instance=pb.LlmInstance(owner="alice", instance_handle="emb", context_limit=77)),
        metadata=bearer(bobby),  # the editor
    )
    assert (resp.instance.context_limit, resp.instance.access_role, resp.instance.has_api_key) == (77, "editor", True)
    assert (await stored_key(vdb.pool, "alice", "emb"))[0] == blob_before
    # the editor replaces the key
    resp = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(
            instance=pb.LlmInstance(owner="alice", instance_handle="emb", api_key="sk-alice-2"),
            update_mask=FieldMask(paths=["api_key"]),
        ),
        metadata=bearer(bobby),
    )
    assert resp.instance.has_api_key and resp.instance.api_key == ""
    assert await decrypted(vdb, "alice", "emb") == "sk-alice-2"
    # clear_api_key removes it; a new key and clear_api_key together are refused
    err = await rpc_error(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.LlmInstance(instance_handle="emb", api_key="sk-x"), clear_api_key=True
            ),
            metadata=bearer(alice),
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "clear_api_key"
    resp = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(instance=pb.LlmInstance(instance_handle="emb"), clear_api_key=True),
        metadata=bearer(alice),
    )
    assert not resp.instance.has_api_key and await decrypted(vdb, "alice", "emb") is None
    # api_key without mask sets it; naming api_key with an empty value removes it
    resp = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(instance=pb.LlmInstance(owner="alice", instance_handle="emb", api_key="sk-3")),
        metadata=ADMIN,
    )
    assert resp.instance.has_api_key and resp.instance.access_role == "admin"
    assert await decrypted(vdb, "alice", "emb") == "sk-3"
    resp = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(
            instance=pb.LlmInstance(instance_handle="emb"), update_mask=FieldMask(paths=["api_key"])
        ),
        metadata=bearer(alice),
    )
    assert not resp.instance.has_api_key

    # refusals: reader, stranger, anonymous; permission before existence
    upd = pb.UpdateInstanceRequest(instance=pb.LlmInstance(owner="alice", instance_handle="emb", description="no"))
    await rpc_error(vdb.instances.UpdateInstance(upd, metadata=bearer(carol)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.UpdateInstance(upd, metadata=bearer(dave)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.UpdateInstance(upd, metadata=ANON), C.UNAUTHENTICATED)
    absent = pb.UpdateInstanceRequest(instance=pb.LlmInstance(owner="alice", instance_handle="absent", description="x"))
    await rpc_error(vdb.instances.UpdateInstance(absent, metadata=bearer(dave)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.UpdateInstance(absent, metadata=bearer(bobby)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.UpdateInstance(absent, metadata=bearer(alice)), C.NOT_FOUND)
    await rpc_error(vdb.instances.UpdateInstance(absent, metadata=ADMIN), C.NOT_FOUND)
    for paths in (["owner"], ["instance_handle"], ["definition"], ["has_api_key"], ["access_role"], ["bogus"]):
        err = await rpc_error(
            vdb.instances.UpdateInstance(
                pb.UpdateInstanceRequest(instance=instance("emb"), update_mask=FieldMask(paths=paths)),
                metadata=bearer(alice),
            ),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == "update_mask"
    for name, value in (("dimensions", 0), ("context_limit", -3), ("endpoint", "nope"), ("api_standard", "nosuch")):
        await rpc_error(
            vdb.instances.UpdateInstance(
                pb.UpdateInstanceRequest(
                    instance=pb.LlmInstance(instance_handle="emb", **{name: value}), update_mask=FieldMask(paths=[name])
                ),
                metadata=bearer(alice),
            ),
            C.INVALID_ARGUMENT,
        )

    # allow_missing creates for the owner and the admin (with the key), not for others
    create = pb.UpdateInstanceRequest(instance=instance("deployed", api_key="sk-deploy"), allow_missing=True)
    first = await vdb.instances.UpdateInstance(create, metadata=bearer(alice))
    again = await vdb.instances.UpdateInstance(create, metadata=bearer(alice))
    assert (first.created, again.created, first.instance.has_api_key) == (True, False, True)
    assert await decrypted(vdb, "alice", "deployed") == "sk-deploy"
    await rpc_error(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(instance=instance("deployed2", owner="alice"), allow_missing=True),
            metadata=bearer(bobby),
        ),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(instance=pb.LlmInstance(instance_handle="partial", model="m"), allow_missing=True),
            metadata=bearer(alice),
        ),
        C.INVALID_ARGUMENT,
    )
    made = await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(instance=instance("by-admin", owner="dave1"), allow_missing=True), metadata=ADMIN
    )
    assert made.created and made.instance.owner == "dave1"


async def test_update_dimensions_refused_while_projects_with_embeddings_use_it(vdb):
    alice, bobby, _, _ = await three_users(vdb)
    await add_project(vdb.pool, "alice", "empty-proj", "alice", "emb")
    dims = pb.UpdateInstanceRequest(
        instance=pb.LlmInstance(owner="alice", instance_handle="emb", dimensions=4),
        update_mask=FieldMask(paths=["dimensions"]),
    )
    # a project without embeddings does not block
    assert (await vdb.instances.UpdateInstance(dims, metadata=bearer(alice))).instance.dimensions == 4
    back = pb.UpdateInstanceRequest(
        instance=pb.LlmInstance(owner="alice", instance_handle="emb", dimensions=3),
        update_mask=FieldMask(paths=["dimensions"]),
    )
    await vdb.instances.UpdateInstance(back, metadata=bearer(alice))
    await add_project(vdb.pool, "bobby", "b-proj", "alice", "emb", embeddings=2)
    for metadata in (bearer(alice), bearer(bobby), ADMIN):
        err = await rpc_error(vdb.instances.UpdateInstance(dims, metadata=metadata), C.FAILED_PRECONDITION)
        assert "bobby/b-proj" in err.details() and "empty-proj" not in err.details()
        assert [v.subject for d in status_details(err) for v in d.violations] == ["project:bobby/b-proj"]
    got = (await vdb.instances.GetInstance(get("alice", "emb"), metadata=bearer(alice))).instance
    assert got.dimensions == 3
    # naming dimensions with the current value, or changing other fields, is fine
    await vdb.instances.UpdateInstance(back, metadata=bearer(alice))
    await vdb.instances.UpdateInstance(
        pb.UpdateInstanceRequest(instance=pb.LlmInstance(owner="alice", instance_handle="emb", model="m2")),
        metadata=bearer(bobby),
    )


async def test_delete_instance_principals_and_projects_in_use(vdb):
    alice, bobby, carol, dave = await three_users(vdb)
    await add_project(vdb.pool, "alice", "p-one", "alice", "emb")
    await add_project(vdb.pool, "carol", "p-two", "alice", "emb", embeddings=1)
    delete = pb.DeleteInstanceRequest(owner="alice", instance_handle="emb")
    for metadata in (bearer(bobby), bearer(carol), bearer(dave)):  # editor, reader, stranger
        await rpc_error(vdb.instances.DeleteInstance(delete, metadata=metadata), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.DeleteInstance(delete, metadata=ANON), C.UNAUTHENTICATED)
    err = await rpc_error(vdb.instances.DeleteInstance(delete, metadata=bearer(alice)), C.FAILED_PRECONDITION)
    assert "alice/p-one" in err.details() and "carol/p-two" in err.details()
    assert [v.subject for d in status_details(err) for v in d.violations] == [
        "project:alice/p-one",
        "project:carol/p-two",
    ]
    await vdb.instances.GetInstance(get("alice", "emb"), metadata=bearer(alice))  # still there
    await vdb.pool.execute("DELETE FROM projects")
    await vdb.instances.DeleteInstance(pb.DeleteInstanceRequest(instance_handle="emb"), metadata=bearer(alice))
    await rpc_error(vdb.instances.DeleteInstance(delete, metadata=bearer(alice)), C.NOT_FOUND)
    await rpc_error(vdb.instances.DeleteInstance(delete, metadata=bearer(bobby)), C.PERMISSION_DENIED)
    await rpc_error(vdb.instances.GetInstance(get("alice", "emb"), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances_shared_with") == 0
    # the admin may delete anyone's
    await create_instance(vdb, dave, "d-inst")
    await vdb.instances.DeleteInstance(
        pb.DeleteInstanceRequest(owner="dave1", instance_handle="d-inst"), metadata=ADMIN
    )
    await rpc_error(
        vdb.instances.DeleteInstance(pb.DeleteInstanceRequest(instance_handle="x-inst"), metadata=ADMIN),
        C.INVALID_ARGUMENT,
    )


async def test_share_unshare_and_list_instance_shares(vdb):
    alice, bobby, carol, dave = await three_users(vdb)
    shares_req = pb.ListInstanceSharesRequest(owner="alice", instance_handle="emb")

    async def shares(metadata=None) -> list[tuple[str, str]]:
        resp = await vdb.instances.ListInstanceShares(shares_req, metadata=metadata or bearer(alice))
        return [(s.user_handle, s.role) for s in resp.shares]

    assert await shares() == [("bobby", "editor"), ("carol", "reader")]
    assert await shares(ADMIN) == [("bobby", "editor"), ("carol", "reader")]
    # re-sharing changes the role
    resp = await vdb.instances.ShareInstance(share("alice", "emb", "carol", "editor"), metadata=bearer(alice))
    assert (resp.share.user_handle, resp.share.role) == ("carol", "editor")
    assert await shares() == [("bobby", "editor"), ("carol", "editor")]
    await vdb.instances.ShareInstance(share("", "emb", "carol", "reader"), metadata=bearer(alice))
    await vdb.instances.ShareInstance(share("alice", "emb", "dave1", "reader"), metadata=ADMIN)
    assert await shares() == [("bobby", "editor"), ("carol", "reader"), ("dave1", "reader")]
    user = (await vdb.users.GetUser(user_pb2.GetUserRequest(user_handle="dave1"), metadata=bearer(dave))).user
    assert [(m.owner, m.handle, m.role) for m in user.instances] == [("alice", "emb", "reader")]

    refusals = [
        (share("alice", "emb", "alice", "reader"), bearer(alice), C.INVALID_ARGUMENT),  # the owner
        (share("alice", "emb", "nobody", "reader"), bearer(alice), C.NOT_FOUND),  # unknown user
        (share("alice", "emb", "_system", "reader"), bearer(alice), C.INVALID_ARGUMENT),
        (share("alice", "emb", "dave1", "owner"), bearer(alice), C.INVALID_ARGUMENT),
        (share("alice", "emb", "dave1", ""), bearer(alice), C.INVALID_ARGUMENT),
        (share("alice", "absent", "dave1", "reader"), bearer(alice), C.NOT_FOUND),
        (share("alice", "emb", "dave1", "editor"), bearer(bobby), C.PERMISSION_DENIED),  # editors may not share
        (share("alice", "emb", "dave1", "editor"), bearer(carol), C.PERMISSION_DENIED),
        (share("alice", "emb", "dave1", "editor"), bearer(dave), C.PERMISSION_DENIED),
        (share("alice", "emb", "dave1", "editor"), ANON, C.UNAUTHENTICATED),
    ]
    for request, metadata, code in refusals:
        err = await rpc_error(vdb.instances.ShareInstance(request, metadata=metadata), code)
        if request.share.user_handle == "nobody":
            assert [d.resource_name for d in status_details(err)] == ["nobody"]
    assert await shares() == [("bobby", "editor"), ("carol", "reader"), ("dave1", "reader")]

    page = await vdb.instances.ListInstanceShares(
        pb.ListInstanceSharesRequest(owner="alice", instance_handle="emb", page_size=2), metadata=bearer(alice)
    )
    assert len(page.shares) == 2 and page.next_page_token
    rest = await vdb.instances.ListInstanceShares(
        pb.ListInstanceSharesRequest(
            owner="alice", instance_handle="emb", page_size=2, page_token=page.next_page_token
        ),
        metadata=bearer(alice),
    )
    assert [s.user_handle for s in rest.shares] == ["dave1"] and not rest.next_page_token
    for metadata, code in (
        (bearer(bobby), C.PERMISSION_DENIED),
        (bearer(carol), C.PERMISSION_DENIED),
        (ANON, C.UNAUTHENTICATED),
    ):
        await rpc_error(vdb.instances.ListInstanceShares(shares_req, metadata=metadata), code)
    await rpc_error(
        vdb.instances.ListInstanceShares(
            pb.ListInstanceSharesRequest(owner="alice", instance_handle="absent"), metadata=bearer(alice)
        ),
        C.NOT_FOUND,
    )

    def unshare(user: str) -> pb.UnshareInstanceRequest:
        return pb.UnshareInstanceRequest(owner="alice", instance_handle="emb", user_handle=user)

    for metadata, code in (
        (bearer(bobby), C.PERMISSION_DENIED),
        (bearer(dave), C.PERMISSION_DENIED),
        (ANON, C.UNAUTHENTICATED),
    ):
        await rpc_error(vdb.instances.UnshareInstance(unshare("carol"), metadata=metadata), code)
    assert (await vdb.instances.UnshareInstance(unshare("carol"), metadata=bearer(alice))).removed
    assert not (await vdb.instances.UnshareInstance(unshare("carol"), metadata=bearer(alice))).removed
    assert (await vdb.instances.UnshareInstance(unshare("dave1"), metadata=ADMIN)).removed
    await rpc_error(vdb.instances.GetInstance(get("alice", "emb"), metadata=bearer(carol)), C.PERMISSION_DENIED)
    assert await shares() == [("bobby", "editor")]


async def test_without_encryption_key_requests_carrying_a_key_are_refused(db_uri, server_settings):
    async with running_server(db_uri, server_settings.replace(encryption_key=None)) as vdb:
        alice = await vdb.create_user("alice")

        async def refused(call) -> None:
            err = await rpc_error(call, C.FAILED_PRECONDITION)
            assert "ENCRYPTION_KEY" in err.details() and "sk-no-store" not in err.details()

        await refused(
            vdb.instances.CreateInstance(
                pb.CreateInstanceRequest(instance=instance("emb", api_key="sk-no-store")), metadata=bearer(alice)
            )
        )
        await refused(
            vdb.instances.CreateInstanceFromDefinition(
                from_definition("_system/openai-small", instance_handle="emb", api_key="sk-no-store"),
                metadata=bearer(alice),
            )
        )
        await refused(
            vdb.instances.UpdateInstance(
                pb.UpdateInstanceRequest(instance=instance("emb", api_key="sk-no-store"), allow_missing=True),
                metadata=bearer(alice),
            )
        )
        assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 0
        # without a key everything works
        got = await create_instance(vdb, alice, "emb")
        assert not got.has_api_key
        await refused(
            vdb.instances.UpdateInstance(
                pb.UpdateInstanceRequest(
                    instance=pb.LlmInstance(instance_handle="emb", api_key="sk-no-store", description="changed"),
                ),
                metadata=bearer(alice),
            )
        )
        got = (await vdb.instances.GetInstance(get("alice", "emb"), metadata=bearer(alice))).instance
        assert (got.has_api_key, got.description) == (False, "instance emb")  # nothing stored, not even the rest
        assert await stored_key(vdb.pool, "alice", "emb") == (None, None)
        # clearing needs no encryption
        resp = await vdb.instances.UpdateInstance(
            pb.UpdateInstanceRequest(instance=pb.LlmInstance(instance_handle="emb"), clear_api_key=True),
            metadata=bearer(alice),
        )
        assert not resp.instance.has_api_key
