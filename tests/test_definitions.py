"""LlmDefinitionService over real gRPC: every RPC with each principal it must allow and refuse."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ANON, bearer, field_violations, rpc_error, status_details
from llm_helpers import BUILTIN, create_definition, definition

from vdb_grpc.v1 import common_pb2, user_pb2
from vdb_grpc.v1 import llm_definition_pb2 as pb
from vdb_grpc.v1 import llm_instance_pb2 as ipb

C = grpc.StatusCode


def get(owner: str, handle: str) -> pb.GetDefinitionRequest:
    return pb.GetDefinitionRequest(owner=owner, definition_handle=handle)


def share(owner: str, handle: str, user: str, role: str = "reader") -> pb.ShareDefinitionRequest:
    return pb.ShareDefinitionRequest(
        owner=owner, definition_handle=handle, share=common_pb2.Share(user_handle=user, role=role)
    )


async def listed(vdb, metadata, page_size: int = 0) -> list[tuple[str, str]]:
    out, token = [], ""
    while True:
        resp = await vdb.definitions.ListDefinitions(
            pb.ListDefinitionsRequest(page_size=page_size, page_token=token), metadata=metadata
        )
        out += [(d.owner, d.definition_handle) for d in resp.definitions]
        token = resp.next_page_token
        if not token:
            return out


async def test_builtin_definitions_readable_by_every_authenticated_caller(vdb):
    alice = await vdb.create_user("alice")
    assert await listed(vdb, bearer(alice)) == BUILTIN
    assert await listed(vdb, ADMIN) == BUILTIN
    # a built-in handle longer than new handles may be (22 characters) is readable
    got = (
        await vdb.definitions.GetDefinition(get("_system", "cohere-multilingual-v3"), metadata=bearer(alice))
    ).definition
    assert (got.model, got.dimensions, got.context_limit, got.api_standard, got.is_public) == (
        "embed-multilingual-v3.0",
        1024,
        512,
        "cohere",
        True,
    )
    small = (await vdb.definitions.GetDefinition(get("_system", "openai-small"), metadata=ADMIN)).definition
    assert (small.model, small.dimensions, small.context_limit) == ("text-embedding-3-small", 1536, 8191)
    # anyone may learn that a built-in definition does not exist
    await rpc_error(vdb.definitions.GetDefinition(get("_system", "nothing"), metadata=bearer(alice)), C.NOT_FOUND)
    await rpc_error(vdb.definitions.ListDefinitions(pb.ListDefinitionsRequest(), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(vdb.definitions.GetDefinition(get("_system", "openai-small"), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.definitions.GetDefinition(get("_system", "openai-small"), metadata=bearer("f" * 64)), C.UNAUTHENTICATED
    )


async def test_create_definition_principals(vdb):
    alice = await vdb.create_user("alice")
    await vdb.create_user("bobby")
    own = await create_definition(vdb, alice, "mine")  # owner empty = the caller
    assert (own.owner, own.definition_handle, own.dimensions, own.is_public) == ("alice", "mine", 3, False)
    same = await create_definition(vdb, alice, "mine2", owner="alice")
    assert same.owner == "alice"
    # the admin names the owner, and is the only one who may write _system's definitions
    for_bobby = await vdb.definitions.CreateDefinition(
        pb.CreateDefinitionRequest(definition=definition("given", owner="bobby")), metadata=ADMIN
    )
    assert for_bobby.definition.owner == "bobby"
    builtin = await vdb.definitions.CreateDefinition(
        pb.CreateDefinitionRequest(definition=definition("house", owner="_system", is_public=True)), metadata=ADMIN
    )
    assert builtin.definition.owner == "_system"
    err = await rpc_error(
        vdb.definitions.CreateDefinition(pb.CreateDefinitionRequest(definition=definition("x-def")), metadata=ADMIN),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "definition.owner"
    await rpc_error(
        vdb.definitions.CreateDefinition(
            pb.CreateDefinitionRequest(definition=definition("x-def", owner="bobby")), metadata=bearer(alice)
        ),
        C.PERMISSION_DENIED,
    )
    err = await rpc_error(
        vdb.definitions.CreateDefinition(
            pb.CreateDefinitionRequest(definition=definition("x-def", owner="_system")), metadata=bearer(alice)
        ),
        C.PERMISSION_DENIED,
    )
    assert "admin" in err.details()
    await rpc_error(
        vdb.definitions.CreateDefinition(pb.CreateDefinitionRequest(definition=definition("x-def")), metadata=ANON),
        C.UNAUTHENTICATED,
    )
    err = await rpc_error(
        vdb.definitions.CreateDefinition(
            pb.CreateDefinitionRequest(definition=definition("mine")), metadata=bearer(alice)
        ),
        C.ALREADY_EXISTS,
    )
    assert field_violations(err) == [("definition.definition_handle", "is already taken")]
    # the admin creating a definition for an unknown user
    err = await rpc_error(
        vdb.definitions.CreateDefinition(
            pb.CreateDefinitionRequest(definition=definition("x-def", owner="nobody")), metadata=ADMIN
        ),
        C.NOT_FOUND,
    )
    assert [d.resource_name for d in status_details(err)] == ["nobody"]


async def test_create_definition_validation(vdb):
    alice = await vdb.create_user("alice")
    cases = [
        ({"dimensions": 0}, "definition.dimensions"),
        ({"dimensions": -5}, "definition.dimensions"),
        ({"dimensions": 16001}, "definition.dimensions"),
        ({"context_limit": 0}, "definition.context_limit"),
        ({"context_limit": -1}, "definition.context_limit"),
        ({"endpoint": ""}, "definition.endpoint"),
        ({"endpoint": "ftp://example.org/x"}, "definition.endpoint"),
        ({"endpoint": "not a url"}, "definition.endpoint"),
        ({"model": ""}, "definition.model"),
        ({"api_standard": ""}, "definition.api_standard"),
        ({"description": "d" * 1001}, "definition.description"),
        ({"definition_handle": "a/b"}, "definition.definition_handle"),
        ({"definition_handle": "_hidden"}, "definition.definition_handle"),
        ({"definition_handle": "x" * 21}, "definition.definition_handle"),
    ]
    for overrides, field in cases:
        values = {"definition_handle": "good", **overrides}
        handle = values.pop("definition_handle")
        err = await rpc_error(
            vdb.definitions.CreateDefinition(
                pb.CreateDefinitionRequest(definition=definition(handle, **values)), metadata=bearer(alice)
            ),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == field, (overrides, err.details())
    err = await rpc_error(
        vdb.definitions.CreateDefinition(
            pb.CreateDefinitionRequest(definition=definition("good", api_standard="nosuch")), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )
    assert "nosuch" in err.details()
    assert field_violations(err) == [("definition.api_standard", "unknown API standard 'nosuch'")]
    assert await vdb.pool.fetchval("SELECT count(*) FROM llm_service_definitions WHERE owner = 'alice'") == 0


async def test_get_definition_visibility_public_and_shared(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    carol = await vdb.create_user("carol")
    await create_definition(vdb, alice, "private")
    assert (await vdb.definitions.GetDefinition(get("", "private"), metadata=bearer(alice))).definition.owner == "alice"
    assert (
        await vdb.definitions.GetDefinition(get("alice", "private"), metadata=ADMIN)
    ).definition.model == "emb-model"
    await rpc_error(vdb.definitions.GetDefinition(get("alice", "private"), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    # permission before existence
    await rpc_error(vdb.definitions.GetDefinition(get("alice", "absent"), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    err = await rpc_error(vdb.definitions.GetDefinition(get("alice", "absent"), metadata=bearer(alice)), C.NOT_FOUND)
    assert [d.resource_name for d in status_details(err)] == ["alice/absent"]
    await rpc_error(vdb.definitions.GetDefinition(get("alice", "absent"), metadata=ADMIN), C.NOT_FOUND)
    await rpc_error(vdb.definitions.GetDefinition(get("", "private"), metadata=ADMIN), C.INVALID_ARGUMENT)
    await rpc_error(vdb.definitions.GetDefinition(get("alice", "private"), metadata=ANON), C.UNAUTHENTICATED)
    # made public: every authenticated user may read it
    await vdb.definitions.UpdateDefinition(
        pb.UpdateDefinitionRequest(
            definition=definition("private", is_public=True), update_mask=FieldMask(paths=["is_public"])
        ),
        metadata=bearer(alice),
    )
    assert (await vdb.definitions.GetDefinition(get("alice", "private"), metadata=bearer(bobby))).definition.is_public
    # shared: readable by the sharee only
    await create_definition(vdb, alice, "shared")
    await vdb.definitions.ShareDefinition(share("alice", "shared", "carol"), metadata=bearer(alice))
    await vdb.definitions.GetDefinition(get("alice", "shared"), metadata=bearer(carol))
    await rpc_error(vdb.definitions.GetDefinition(get("alice", "shared"), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    await vdb.definitions.UnshareDefinition(
        pb.UnshareDefinitionRequest(owner="alice", definition_handle="shared", user_handle="carol"),
        metadata=bearer(alice),
    )
    await rpc_error(vdb.definitions.GetDefinition(get("alice", "shared"), metadata=bearer(carol)), C.PERMISSION_DENIED)


async def test_list_definitions_each_usable_once_with_pages(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    carol = await vdb.create_user("carol")
    await create_definition(vdb, alice, "a-private")
    await create_definition(vdb, alice, "a-public", is_public=True)
    await create_definition(vdb, alice, "a-shared")
    await vdb.definitions.ShareDefinition(share("alice", "a-shared", "bobby"), metadata=bearer(alice))
    # public AND shared: still listed once
    await vdb.definitions.ShareDefinition(share("alice", "a-public", "bobby"), metadata=bearer(alice))
    await create_definition(vdb, bobby, "b-own")
    await create_definition(vdb, carol, "c-private")

    expected_bobby = sorted([("alice", "a-public"), ("alice", "a-shared"), ("bobby", "b-own"), *BUILTIN])
    assert await listed(vdb, bearer(bobby)) == expected_bobby
    assert await listed(vdb, bearer(bobby), page_size=2) == expected_bobby
    assert await listed(vdb, bearer(bobby), page_size=1) == expected_bobby
    assert await listed(vdb, bearer(alice)) == sorted(
        [("alice", "a-private"), ("alice", "a-public"), ("alice", "a-shared"), *BUILTIN]
    )
    everything = await listed(vdb, ADMIN, page_size=3)
    assert everything == sorted([*expected_bobby, ("alice", "a-private"), ("carol", "c-private")])
    first = await vdb.definitions.ListDefinitions(pb.ListDefinitionsRequest(page_size=2), metadata=bearer(bobby))
    assert len(first.definitions) == 2 and first.next_page_token
    await rpc_error(
        vdb.definitions.ListDefinitions(pb.ListDefinitionsRequest(page_token="bogus"), metadata=bearer(bobby)),
        C.INVALID_ARGUMENT,
    )
    # a token of another list is refused
    users_token = (await vdb.users.ListUsers(user_pb2.ListUsersRequest(page_size=1), metadata=ADMIN)).next_page_token
    await rpc_error(
        vdb.definitions.ListDefinitions(pb.ListDefinitionsRequest(page_token=users_token), metadata=bearer(bobby)),
        C.INVALID_ARGUMENT,
    )
    await rpc_error(
        vdb.definitions.ListDefinitions(pb.ListDefinitionsRequest(page_size=-1), metadata=bearer(bobby)),
        C.INVALID_ARGUMENT,
    )


async def test_update_definition_principals_mask_and_allow_missing(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    await create_definition(vdb, alice, "mine", description="before")
    await vdb.definitions.ShareDefinition(share("alice", "mine", "bobby"), metadata=bearer(alice))

    upd = pb.UpdateDefinitionRequest(
        definition=definition("mine", model="ignored", description="after"),
        update_mask=FieldMask(paths=["description"]),
    )
    got = (await vdb.definitions.UpdateDefinition(upd, metadata=bearer(alice))).definition
    assert (got.description, got.model) == ("after", "emb-model")
    # without a mask: the fields set in the request
    got = (
        await vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(definition=pb.LlmDefinition(definition_handle="mine", dimensions=7)),
            metadata=bearer(alice),
        )
    ).definition
    assert (got.dimensions, got.description, got.endpoint) == (7, "after", "https://llm.example.org/v1/embeddings")
    # the mask may carry the resource prefix
    got = (
        await vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(
                definition=pb.LlmDefinition(owner="alice", definition_handle="mine", context_limit=99),
                update_mask=FieldMask(paths=["definition.context_limit"]),
            ),
            metadata=ADMIN,
        )
    ).definition
    assert got.context_limit == 99

    # a reader (sharee) and other users may not write; anonymous callers are not authenticated
    await rpc_error(
        vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(definition=definition("mine", owner="alice")), metadata=bearer(bobby)
        ),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(definition=definition("absent", owner="alice")), metadata=bearer(bobby)
        ),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(definition=definition("mine", owner="alice")), metadata=ANON
        ),
        C.UNAUTHENTICATED,
    )
    # _system's: admin only
    sys_upd = pb.UpdateDefinitionRequest(
        definition=pb.LlmDefinition(owner="_system", definition_handle="openai-small", description="patched"),
        update_mask=FieldMask(paths=["description"]),
    )
    await rpc_error(vdb.definitions.UpdateDefinition(sys_upd, metadata=bearer(alice)), C.PERMISSION_DENIED)
    assert (await vdb.definitions.UpdateDefinition(sys_upd, metadata=ADMIN)).definition.description == "patched"

    await rpc_error(
        vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(definition=definition("absent")), metadata=bearer(alice)
        ),
        C.NOT_FOUND,
    )
    for paths, field in ((["owner"], "update_mask"), (["definition_handle"], "update_mask"), (["nope"], "update_mask")):
        err = await rpc_error(
            vdb.definitions.UpdateDefinition(
                pb.UpdateDefinitionRequest(definition=definition("mine"), update_mask=FieldMask(paths=paths)),
                metadata=bearer(alice),
            ),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == field
    for bad, field in (
        ({"dimensions": 0}, "definition.dimensions"),
        ({"context_limit": 0}, "definition.context_limit"),
    ):
        (name,) = bad
        err = await rpc_error(
            vdb.definitions.UpdateDefinition(
                pb.UpdateDefinitionRequest(definition=definition("mine", **bad), update_mask=FieldMask(paths=[name])),
                metadata=bearer(alice),
            ),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == field
    err = await rpc_error(
        vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(
                definition=definition("mine", api_standard="nosuch"), update_mask=FieldMask(paths=["api_standard"])
            ),
            metadata=bearer(alice),
        ),
        C.INVALID_ARGUMENT,
    )
    assert "nosuch" in err.details()

    # allow_missing creates (idempotent deploys), for the owner
    req = pb.UpdateDefinitionRequest(definition=definition("deployed"), allow_missing=True)
    first = await vdb.definitions.UpdateDefinition(req, metadata=bearer(alice))
    again = await vdb.definitions.UpdateDefinition(req, metadata=bearer(alice))
    assert (first.created, again.created, again.definition.owner) == (True, False, "alice")
    incomplete = pb.UpdateDefinitionRequest(
        definition=pb.LlmDefinition(definition_handle="partial", model="m"), allow_missing=True
    )
    await rpc_error(vdb.definitions.UpdateDefinition(incomplete, metadata=bearer(alice)), C.INVALID_ARGUMENT)
    await rpc_error(
        vdb.definitions.UpdateDefinition(
            pb.UpdateDefinitionRequest(definition=definition("deployed2", owner="alice"), allow_missing=True),
            metadata=bearer(bobby),
        ),
        C.PERMISSION_DENIED,
    )


async def test_delete_definition_keeps_instances_made_from_it(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    await create_definition(vdb, alice, "tmpl", model="kept-model", dimensions=5, is_public=True)
    await vdb.definitions.ShareDefinition(share("alice", "tmpl", "bobby"), metadata=bearer(alice))
    made = await vdb.instances.CreateInstanceFromDefinition(
        ipb.CreateInstanceFromDefinitionRequest(
            definition="alice/tmpl", instance=ipb.LlmInstance(instance_handle="inst")
        ),
        metadata=bearer(bobby),
    )
    assert made.instance.definition == "alice/tmpl"

    delete = pb.DeleteDefinitionRequest(owner="alice", definition_handle="tmpl")
    await rpc_error(vdb.definitions.DeleteDefinition(delete, metadata=bearer(bobby)), C.PERMISSION_DENIED)  # reader
    await rpc_error(vdb.definitions.DeleteDefinition(delete, metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.definitions.DeleteDefinition(
            pb.DeleteDefinitionRequest(owner="_system", definition_handle="openai-small"), metadata=bearer(alice)
        ),
        C.PERMISSION_DENIED,
    )
    await vdb.definitions.DeleteDefinition(pb.DeleteDefinitionRequest(definition_handle="tmpl"), metadata=bearer(alice))
    await rpc_error(vdb.definitions.DeleteDefinition(delete, metadata=bearer(alice)), C.NOT_FOUND)
    await rpc_error(vdb.definitions.DeleteDefinition(delete, metadata=bearer(bobby)), C.PERMISSION_DENIED)
    # the instance keeps working with its copied values, and no longer names the definition
    got = (
        await vdb.instances.GetInstance(ipb.GetInstanceRequest(instance_handle="inst"), metadata=bearer(bobby))
    ).instance
    assert (got.model, got.dimensions, got.definition) == ("kept-model", 5, "")
    # the admin may delete anyone's, including _system's
    await create_definition(vdb, alice, "tmpl2")
    await vdb.definitions.DeleteDefinition(
        pb.DeleteDefinitionRequest(owner="alice", definition_handle="tmpl2"), metadata=ADMIN
    )
    await vdb.definitions.DeleteDefinition(
        pb.DeleteDefinitionRequest(owner="_system", definition_handle="gemini-embedding-001"), metadata=ADMIN
    )
    assert ("_system", "gemini-embedding-001") not in await listed(vdb, ADMIN)


async def test_share_unshare_and_list_definition_shares(vdb):
    alice = await vdb.create_user("alice")
    bobby = await vdb.create_user("bobby")
    carol = await vdb.create_user("carol")
    await create_definition(vdb, alice, "tmpl")
    resp = await vdb.definitions.ShareDefinition(share("alice", "tmpl", "bobby", role=""), metadata=bearer(alice))
    assert (resp.share.user_handle, resp.share.role) == ("bobby", "reader")
    await vdb.definitions.ShareDefinition(share("alice", "tmpl", "carol"), metadata=ADMIN)
    await vdb.definitions.ShareDefinition(share("alice", "tmpl", "carol"), metadata=bearer(alice))  # again: no-op

    refusals = [
        (share("alice", "tmpl", "bobby", role="editor"), bearer(alice), C.INVALID_ARGUMENT),
        (share("alice", "tmpl", "alice"), bearer(alice), C.INVALID_ARGUMENT),
        (share("alice", "tmpl", "_system"), bearer(alice), C.INVALID_ARGUMENT),
        (share("alice", "tmpl", "nobody"), bearer(alice), C.NOT_FOUND),
        (share("alice", "absent", "bobby"), bearer(alice), C.NOT_FOUND),
        (share("alice", "tmpl", "carol"), bearer(bobby), C.PERMISSION_DENIED),  # a reader may not share
        (share("alice", "absent", "carol"), bearer(bobby), C.PERMISSION_DENIED),
        (share("_system", "openai-small", "bobby"), bearer(alice), C.PERMISSION_DENIED),
        (share("alice", "tmpl", "carol"), ANON, C.UNAUTHENTICATED),
    ]
    for request, metadata, code in refusals:
        await rpc_error(vdb.definitions.ShareDefinition(request, metadata=metadata), code)
    err = await rpc_error(
        vdb.definitions.ShareDefinition(share("alice", "tmpl", "nobody"), metadata=bearer(alice)), C.NOT_FOUND
    )
    assert [d.resource_name for d in status_details(err)] == ["nobody"]

    def shares_req(**kw) -> pb.ListDefinitionSharesRequest:
        return pb.ListDefinitionSharesRequest(owner="alice", definition_handle="tmpl", **kw)

    for metadata in (bearer(alice), ADMIN):
        got = await vdb.definitions.ListDefinitionShares(shares_req(), metadata=metadata)
        assert [(s.user_handle, s.role) for s in got.shares] == [("bobby", "reader"), ("carol", "reader")]
    page = await vdb.definitions.ListDefinitionShares(shares_req(page_size=1), metadata=bearer(alice))
    assert [s.user_handle for s in page.shares] == ["bobby"] and page.next_page_token
    page = await vdb.definitions.ListDefinitionShares(
        shares_req(page_size=1, page_token=page.next_page_token), metadata=bearer(alice)
    )
    assert [s.user_handle for s in page.shares] == ["carol"] and not page.next_page_token
    await rpc_error(vdb.definitions.ListDefinitionShares(shares_req(), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    await rpc_error(vdb.definitions.ListDefinitionShares(shares_req(), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.definitions.ListDefinitionShares(
            pb.ListDefinitionSharesRequest(owner="alice", definition_handle="absent"), metadata=bearer(alice)
        ),
        C.NOT_FOUND,
    )
    empty = await vdb.definitions.ListDefinitionShares(
        pb.ListDefinitionSharesRequest(owner="_system", definition_handle="openai-small"), metadata=ADMIN
    )
    assert list(empty.shares) == [] and empty.next_page_token == ""

    def unshare(user: str, owner: str = "alice") -> pb.UnshareDefinitionRequest:
        return pb.UnshareDefinitionRequest(owner=owner, definition_handle="tmpl", user_handle=user)

    await rpc_error(vdb.definitions.UnshareDefinition(unshare("carol"), metadata=bearer(bobby)), C.PERMISSION_DENIED)
    await rpc_error(vdb.definitions.UnshareDefinition(unshare("carol"), metadata=bearer(carol)), C.PERMISSION_DENIED)
    await rpc_error(vdb.definitions.UnshareDefinition(unshare("carol"), metadata=ANON), C.UNAUTHENTICATED)
    assert (await vdb.definitions.UnshareDefinition(unshare("carol"), metadata=bearer(alice))).removed
    assert not (await vdb.definitions.UnshareDefinition(unshare("carol"), metadata=bearer(alice))).removed
    assert (await vdb.definitions.UnshareDefinition(unshare("bobby"), metadata=ADMIN)).removed
    got = await vdb.definitions.ListDefinitionShares(shares_req(), metadata=bearer(alice))
    assert list(got.shares) == []
    # GetUser shows definitions shared with a user
    await vdb.definitions.ShareDefinition(share("alice", "tmpl", "bobby"), metadata=bearer(alice))
    user = (await vdb.users.GetUser(user_pb2.GetUserRequest(user_handle="bobby"), metadata=bearer(bobby))).user
    assert [(m.owner, m.handle, m.role) for m in user.definitions] == [("alice", "tmpl", "reader")]
