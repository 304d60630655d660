"""ProjectService over real gRPC: every RPC with every principal, and each refusal the issue lists.

Principals: the admin, the owner (alice), an editor (bobby), a reader (carol), another user (david) and
anonymous callers, on a private and on a public project. Instances and embeddings are inserted with SQL (their
services are built elsewhere).
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from harness import ADMIN, ANON, bearer, field_violations, rpc_error, status_details

from vdb_grpc.auth import ADMIN as ADMIN_PRINCIPAL
from vdb_grpc.auth import ANONYMOUS, Principal, PrincipalKind
from vdb_grpc.domain.projects import NO_INSTANCE_MESSAGE, resolve_project_access
from vdb_grpc.errors import FailedPrecondition, NotFound, PermissionDenied, Unauthenticated
from vdb_grpc.v1 import common_pb2, user_pb2
from vdb_grpc.v1 import project_pb2 as pb

C = grpc.StatusCode
Metadata = tuple[tuple[str, str], ...]

SCHEMA_YEAR = json.dumps(
    {"type": "object", "properties": {"year": {"type": "integer"}}, "required": ["year"]}, separators=(",", ":")
)


# ---------------------------------------------------------------------------------------------------- helpers


async def add_instance(
    vdb: Any, owner: str, handle: str = "emb", dims: int = 3, shared: dict[str, str] | None = None
) -> int:
    """Insert an LLM service instance (and its shares) directly; return its id."""
    async with vdb.pool.acquire() as conn:
        iid = int(
            await conn.fetchval(
                "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
                " VALUES ($1, $2, 'http://x', 'openai', 'm', $3) RETURNING instance_id",
                handle,
                owner,
                dims,
            )
        )
        for user, role in (shared or {}).items():
            await conn.execute(
                "INSERT INTO llm_service_instances_shared_with (user_handle, instance_id, role) VALUES ($1, $2, $3)",
                user,
                iid,
                role,
            )
    return iid


async def add_embeddings(
    vdb: Any, owner: str, project: str, items: list[tuple[str, dict[str, Any] | None]], dims: int = 3
) -> None:
    """Insert embeddings ``(text_id, metadata)`` into ``owner/project`` directly."""
    vector = "[" + ",".join(str(i + 1) for i in range(dims)) + "]"
    async with vdb.pool.acquire() as conn:
        pid, iid = await conn.fetchrow(
            "SELECT project_id, llm_service_instance_id FROM projects WHERE owner = $1 AND project_handle = $2",
            owner,
            project,
        )
        await conn.executemany(
            "INSERT INTO embeddings (text_id, owner, project_id, llm_service_instance_id, vector, vector_dim, metadata)"
            " VALUES ($1, $2, $3, $4, $5::text::halfvec, $6, $7::jsonb)",
            [(t, owner, pid, iid, vector, dims, None if m is None else json.dumps(m)) for t, m in items],
        )


def project(handle: str, instance: str = "emb", **fields: Any) -> pb.Project:
    return pb.Project(project_handle=handle, instance=instance, **fields)


async def create(vdb: Any, md: Metadata, p: pb.Project) -> pb.Project:
    return (await vdb.projects.CreateProject(pb.CreateProjectRequest(project=p), metadata=md)).project


async def get(vdb: Any, md: Metadata, owner: str, handle: str) -> pb.Project:
    return (
        await vdb.projects.GetProject(pb.GetProjectRequest(owner=owner, project_handle=handle), metadata=md)
    ).project


async def share(vdb: Any, md: Metadata, owner: str, handle: str, user: str, role: str) -> pb.Share:
    req = pb.ShareProjectRequest(
        owner=owner, project_handle=handle, share=common_pb2.Share(user_handle=user, role=role)
    )
    return (await vdb.projects.ShareProject(req, metadata=md)).share


async def world(vdb: Any) -> dict[str, Metadata]:
    """Users alice (owner), bobby (editor), carol (reader), david (other); alice's instance ``emb`` (3 dims,
    shared with bobby as reader); alice's private ``proj`` (shared: bobby editor, carol reader) and public
    ``pub``. Returns call metadata by principal name."""
    keys: dict[str, Metadata] = {"admin": ADMIN, "anon": ANON}
    for name, handle in (("owner", "alice"), ("editor", "bobby"), ("reader", "carol"), ("other", "david")):
        keys[name] = bearer(await vdb.create_user(handle))
    await add_instance(vdb, "alice", "emb", 3, shared={"bobby": "reader"})
    await create(vdb, keys["owner"], project("proj", description="private one"))
    await create(vdb, keys["owner"], project("pub", public_read=True))
    await share(vdb, keys["owner"], "alice", "proj", "bobby", "editor")
    await share(vdb, keys["owner"], "alice", "proj", "carol", "reader")
    return keys


def preconditions(err: grpc.aio.AioRpcError) -> list[tuple[str, str, str]]:
    return [
        (v.type, v.subject, v.description)
        for d in status_details(err)
        if isinstance(d, error_details_pb2.PreconditionFailure)
        for v in d.violations
    ]


# ------------------------------------------------------------------------------------------------ CreateProject


async def test_create_project_returns_it_and_binds_own_instance(vdb):
    key = bearer(await vdb.create_user("alice"))
    await add_instance(vdb, "alice", "emb", 3)
    p = await create(vdb, key, project("proj", description="d", metadata_schema=SCHEMA_YEAR, public_read=True))
    assert (p.owner, p.project_handle, p.description, p.metadata_schema) == ("alice", "proj", "d", SCHEMA_YEAR)
    assert (p.instance, p.public_read, p.role, p.instance_missing) == ("alice/emb", True, "owner", False)
    assert p.HasField("number_of_embeddings") and p.number_of_embeddings == 0
    assert list(p.shares) == []
    # "owner/handle" of one's own instance works too, and owner may be given explicitly
    p2 = await create(vdb, key, project("proj2", instance="alice/emb", owner="alice"))
    assert p2.instance == "alice/emb"


async def test_create_with_shared_instance_of_any_role(vdb):
    await vdb.create_user("alice")
    bobby = bearer(await vdb.create_user("bobby"))
    carol = bearer(await vdb.create_user("carol"))
    await add_instance(vdb, "alice", "emb", 3, shared={"bobby": "reader", "carol": "editor"})
    assert (await create(vdb, bobby, project("bproj", instance="alice/emb"))).instance == "alice/emb"
    assert (await create(vdb, carol, project("cproj", instance="alice/emb"))).instance == "alice/emb"


async def test_create_refusals(vdb):
    alice = bearer(await vdb.create_user("alice"))
    david = bearer(await vdb.create_user("david"))
    await add_instance(vdb, "alice", "emb", 3)
    new = pb.CreateProjectRequest
    # no instance
    err = await rpc_error(
        vdb.projects.CreateProject(new(project=project("pro1", instance="")), metadata=alice), C.INVALID_ARGUMENT
    )
    assert field_violations(err)[0][0] == "project.instance"
    # someone else's instance, not shared; and an absent one of someone else: the same refusal
    e1 = await rpc_error(
        vdb.projects.CreateProject(new(project=project("pro1", instance="alice/emb")), metadata=david),
        C.PERMISSION_DENIED,
    )
    e2 = await rpc_error(
        vdb.projects.CreateProject(new(project=project("pro1", instance="alice/nothere")), metadata=david),
        C.PERMISSION_DENIED,
    )
    assert "alice/emb" in e1.details() and "alice/nothere" in e2.details()
    # one's own absent instance: NOT_FOUND naming it
    err = await rpc_error(
        vdb.projects.CreateProject(new(project=project("pro1", instance="nothere")), metadata=david), C.NOT_FOUND
    )
    assert [d.resource_name for d in status_details(err)] == ["david/nothere"]
    # anonymous, another owner, bad values
    await rpc_error(vdb.projects.CreateProject(new(project=project("pro1")), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.projects.CreateProject(new(project=project("pro1", owner="david")), metadata=alice), C.PERMISSION_DENIED
    )
    for bad, field in (
        (project("x"), "project.project_handle"),
        (project("_sys"), "project.project_handle"),
        (project("pro1", description="d" * 256), "project.description"),
        (project("pro1", metadata_schema="{nope"), "project.metadata_schema"),
        (project("pro1", metadata_schema='{"type": "nope"}'), "project.metadata_schema"),
        (project("pro1", metadata_schema="[]"), "project.metadata_schema"),
        (project("pro1", instance="a/b/c"), "project.instance"),
        (project("pro1", instance="al/emb"), "project.instance"),
    ):
        err = await rpc_error(vdb.projects.CreateProject(new(project=bad), metadata=alice), C.INVALID_ARGUMENT)
        assert field_violations(err)[0][0] == field, err.details()
    # duplicate handle
    await create(vdb, alice, project("pro1", description="d" * 255))
    err = await rpc_error(vdb.projects.CreateProject(new(project=project("pro1")), metadata=alice), C.ALREADY_EXISTS)
    assert "alice/pro1" in err.details()


async def test_admin_creates_for_a_user(vdb):
    await vdb.create_user("alice")
    await vdb.create_user("bobby")
    await add_instance(vdb, "alice", "emb", 3, shared={"bobby": "reader"})
    new = pb.CreateProjectRequest
    p = await create(vdb, ADMIN, project("bproj", owner="bobby", instance="alice/emb"))
    assert (p.owner, p.role, p.instance) == ("bobby", "admin", "alice/emb")
    # a bare handle is the named owner's own instance
    p = await create(vdb, ADMIN, project("aproj", owner="alice"))
    assert p.instance == "alice/emb"
    await rpc_error(vdb.projects.CreateProject(new(project=project("xpro")), metadata=ADMIN), C.INVALID_ARGUMENT)
    await rpc_error(
        vdb.projects.CreateProject(new(project=project("xpro", owner="ghost", instance="alice/emb")), metadata=ADMIN),
        C.NOT_FOUND,
    )
    await rpc_error(
        vdb.projects.CreateProject(new(project=project("xpro", owner="bobby", instance="alice/none")), metadata=ADMIN),
        C.NOT_FOUND,
    )
    await vdb.create_user("david")
    err = await rpc_error(
        vdb.projects.CreateProject(new(project=project("xpro", owner="david", instance="alice/emb")), metadata=ADMIN),
        C.FAILED_PRECONDITION,
    )
    assert preconditions(err)[0][:2] == ("INSTANCE_NOT_USABLE", "instance:alice/emb")


# --------------------------------------------------------------------------------------------------- GetProject


async def test_get_private_project_by_every_principal(vdb):
    keys = await world(vdb)
    await add_embeddings(vdb, "alice", "proj", [("t1", None), ("t2", {"a": 1})])
    expected = {"admin": "admin", "owner": "owner", "editor": "editor", "reader": "reader"}
    for who, role in expected.items():
        p = await get(vdb, keys[who], "alice", "proj")
        assert (p.role, p.description, p.instance, p.number_of_embeddings) == (role, "private one", "alice/emb", 2)
        shares = [(s.user_handle, s.role) for s in p.shares]
        assert shares == ([("bobby", "editor"), ("carol", "reader")] if role in ("owner", "admin") else []), who
    err = await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="proj"), metadata=keys["other"]),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="proj"), metadata=ANON),
        C.UNAUTHENTICATED,
    )
    # permission before existence: an absent project gives the very same answers
    err_absent = await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="nope"), metadata=keys["other"]),
        C.PERMISSION_DENIED,
    )
    assert err.details() == "you may not read project 'alice/proj'"
    assert err_absent.details() == "you may not read project 'alice/nope'"
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="nope"), metadata=ANON),
        C.UNAUTHENTICATED,
    )
    for who in ("editor", "reader"):
        await rpc_error(
            vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="nope"), metadata=keys[who]),
            C.PERMISSION_DENIED,
        )
    # those who would see it: NOT_FOUND with ResourceInfo
    for who in ("admin", "owner"):
        err = await rpc_error(
            vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="nope"), metadata=keys[who]),
            C.NOT_FOUND,
        )
        assert [d.resource_name for d in status_details(err)] == ["alice/nope"]
    # empty owner means the caller
    assert (await get(vdb, keys["owner"], "", "proj")).owner == "alice"
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(project_handle="proj"), metadata=ADMIN), C.INVALID_ARGUMENT
    )
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="a/b"), metadata=ADMIN),
        C.INVALID_ARGUMENT,
    )


async def test_get_public_project_by_every_principal(vdb):
    keys = await world(vdb)
    await add_embeddings(vdb, "alice", "pub", [("t1", None)])
    roles = {"admin": "admin", "owner": "owner", "editor": "public", "reader": "public", "other": "public"}
    for who, role in {**roles, "anon": "public"}.items():
        p = await get(vdb, keys[who], "alice", "pub")
        assert (p.role, p.public_read, p.number_of_embeddings) == (role, True, 1), who
        assert (len(p.shares) == 0) or who in ("owner", "admin")


# ------------------------------------------------------------------------------------------------- ListProjects


async def _list(vdb: Any, md: Metadata, **kw: Any) -> list[tuple[str, str, str]]:
    out, token = [], ""
    while True:
        resp = await vdb.projects.ListProjects(pb.ListProjectsRequest(page_token=token, **kw), metadata=md)
        out += [(p.owner, p.project_handle, p.role) for p in resp.projects]
        assert all(not p.HasField("number_of_embeddings") and not p.shares for p in resp.projects)
        token = resp.next_page_token
        if not token:
            return out


async def test_list_projects_own_shared_public_each_once(vdb):
    keys = await world(vdb)
    await add_instance(vdb, "bobby", "bemb", 3)
    await create(vdb, keys["editor"], project("bown", instance="bemb"))
    await share(vdb, keys["owner"], "alice", "pub", "carol", "reader")  # shared AND public: listed once, as reader
    assert await _list(vdb, keys["owner"]) == [("alice", "proj", "owner"), ("alice", "pub", "owner")]
    assert await _list(vdb, keys["owner"], include_public=True) == [
        ("alice", "proj", "owner"),
        ("alice", "pub", "owner"),
    ]
    assert await _list(vdb, keys["editor"]) == [("alice", "proj", "editor"), ("bobby", "bown", "owner")]
    assert await _list(vdb, keys["editor"], include_public=True) == [
        ("alice", "proj", "editor"),
        ("alice", "pub", "public"),
        ("bobby", "bown", "owner"),
    ]
    assert await _list(vdb, keys["reader"], include_public=True) == [
        ("alice", "proj", "reader"),
        ("alice", "pub", "reader"),
    ]
    assert await _list(vdb, keys["other"]) == []
    assert await _list(vdb, keys["other"], owner="david") == []
    assert await _list(vdb, keys["other"], include_public=True) == [("alice", "pub", "public")]
    assert await _list(vdb, ANON, include_public=True) == [("alice", "pub", "public")]
    # the admin: everything, or what a named user would list (with that user's roles)
    assert await _list(vdb, ADMIN) == [
        ("alice", "proj", "admin"),
        ("alice", "pub", "admin"),
        ("bobby", "bown", "admin"),
    ]
    assert await _list(vdb, ADMIN, owner="bobby") == [("alice", "proj", "editor"), ("bobby", "bown", "owner")]
    # refusals
    await rpc_error(vdb.projects.ListProjects(pb.ListProjectsRequest(), metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.projects.ListProjects(pb.ListProjectsRequest(owner="alice", include_public=True), metadata=ANON),
        C.UNAUTHENTICATED,
    )
    await rpc_error(
        vdb.projects.ListProjects(pb.ListProjectsRequest(owner="alice"), metadata=keys["other"]), C.PERMISSION_DENIED
    )
    await rpc_error(vdb.projects.ListProjects(pb.ListProjectsRequest(owner="ghost"), metadata=ADMIN), C.NOT_FOUND)


async def test_list_projects_pages_are_stable(vdb):
    key = bearer(await vdb.create_user("alice"))
    await add_instance(vdb, "alice", "emb", 3)
    handles = [f"p{i:02d}" for i in range(7)]
    for h in reversed(handles):
        await create(vdb, key, project(h))
    resp = await vdb.projects.ListProjects(pb.ListProjectsRequest(page_size=3), metadata=key)
    assert [p.project_handle for p in resp.projects] == handles[:3] and resp.next_page_token
    # an item added before the cursor position does not make the next page repeat or skip anything
    await create(vdb, key, project("p00a"))
    rest = []
    token = resp.next_page_token
    while token:
        page = await vdb.projects.ListProjects(pb.ListProjectsRequest(page_size=3, page_token=token), metadata=key)
        rest += [p.project_handle for p in page.projects]
        token = page.next_page_token
    assert rest == handles[3:]
    for bad in (
        pb.ListProjectsRequest(page_token="garbage!"),
        pb.ListProjectsRequest(page_size=-1),
        pb.ListProjectsRequest(page_token="eyJsIjoicHJvamVjdHMiLCJrIjpbMV19"),  # {"l":"projects","k":[1]}
    ):
        await rpc_error(vdb.projects.ListProjects(bad, metadata=key), C.INVALID_ARGUMENT)


# ------------------------------------------------------------------------------------------------ UpdateProject


def upd(p: pb.Project, paths: list[str] | None = None, allow_missing: bool = False) -> pb.UpdateProjectRequest:
    mask = FieldMask(paths=paths) if paths is not None else None
    return pb.UpdateProjectRequest(project=p, update_mask=mask, allow_missing=allow_missing)


async def test_update_fields_with_and_without_mask(vdb):
    keys = await world(vdb)
    resp = await vdb.projects.UpdateProject(
        upd(pb.Project(owner="alice", project_handle="proj", description="new", public_read=True), ["description"]),
        metadata=keys["owner"],
    )
    assert (resp.project.description, resp.project.public_read, resp.created) == ("new", False, False)
    # without a mask: the fields set in the request
    resp = await vdb.projects.UpdateProject(
        upd(pb.Project(owner="alice", project_handle="proj", public_read=True)), metadata=keys["owner"]
    )
    assert (resp.project.description, resp.project.public_read) == ("new", True)
    # turning public_read off needs the mask; so does clearing the schema
    resp = await vdb.projects.UpdateProject(
        upd(pb.Project(owner="alice", project_handle="proj", metadata_schema=SCHEMA_YEAR)), metadata=ADMIN
    )
    assert resp.project.metadata_schema == SCHEMA_YEAR and resp.project.role == "admin"
    resp = await vdb.projects.UpdateProject(
        upd(pb.Project(owner="alice", project_handle="proj"), ["public_read", "metadata_schema"]), metadata=ADMIN
    )
    assert (resp.project.public_read, resp.project.metadata_schema) == (False, "")
    # a GetProject answer sent back unchanged (output-only fields included) is a no-op update
    got = await get(vdb, keys["owner"], "alice", "proj")
    resp = await vdb.projects.UpdateProject(upd(got), metadata=keys["owner"])
    assert resp.project == got


async def test_update_permissions_and_refusals(vdb):
    keys = await world(vdb)
    req = upd(pb.Project(owner="alice", project_handle="proj", description="x"))
    for who in ("editor", "reader", "other"):
        err = await rpc_error(vdb.projects.UpdateProject(req, metadata=keys[who]), C.PERMISSION_DENIED)
        assert "alice/proj" in err.details()
    await rpc_error(vdb.projects.UpdateProject(req, metadata=ANON), C.UNAUTHENTICATED)
    # public projects are public for reading only
    pub = upd(pb.Project(owner="alice", project_handle="pub", description="x"))
    await rpc_error(vdb.projects.UpdateProject(pub, metadata=keys["other"]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.UpdateProject(pub, metadata=ANON), C.UNAUTHENTICATED)
    for paths, field in ((["role"], "update_mask"), (["owner"], "update_mask"), (["nope"], "update_mask")):
        err = await rpc_error(
            vdb.projects.UpdateProject(upd(pb.Project(owner="alice", project_handle="proj"), paths), metadata=ADMIN),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == field
    err = await rpc_error(
        vdb.projects.UpdateProject(upd(pb.Project(owner="alice", project_handle="proj"), ["instance"]), metadata=ADMIN),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "project.instance"
    await rpc_error(
        vdb.projects.UpdateProject(
            upd(pb.Project(owner="alice", project_handle="proj", description="d" * 256)), metadata=keys["owner"]
        ),
        C.INVALID_ARGUMENT,
    )
    await rpc_error(
        vdb.projects.UpdateProject(
            upd(pb.Project(owner="alice", project_handle="nope", description="x")), metadata=ADMIN
        ),
        C.NOT_FOUND,
    )
    await rpc_error(
        vdb.projects.UpdateProject(upd(pb.Project(project_handle="nope", description="x")), metadata=keys["owner"]),
        C.NOT_FOUND,
    )


async def test_update_allow_missing_creates_once(vdb):
    keys = await world(vdb)
    req = upd(pb.Project(project_handle="fresh", instance="emb", description="d"), allow_missing=True)
    first = await vdb.projects.UpdateProject(req, metadata=keys["owner"])
    assert first.created and (first.project.owner, first.project.instance) == ("alice", "alice/emb")
    again = await vdb.projects.UpdateProject(req, metadata=keys["owner"])
    assert not again.created and again.project.description == "d"
    # others may not create in alice's namespace; nor without an instance
    other = upd(pb.Project(owner="alice", project_handle="fresh2", instance="emb"), allow_missing=True)
    await rpc_error(vdb.projects.UpdateProject(other, metadata=keys["other"]), C.PERMISSION_DENIED)
    noinst = upd(pb.Project(project_handle="fresh2", description="d"), allow_missing=True)
    await rpc_error(vdb.projects.UpdateProject(noinst, metadata=keys["owner"]), C.INVALID_ARGUMENT)
    created = await vdb.projects.UpdateProject(
        upd(pb.Project(owner="bobby", project_handle="viaadm", instance="alice/emb"), allow_missing=True),
        metadata=ADMIN,
    )
    assert created.created and created.project.owner == "bobby"


async def test_update_instance_same_or_other_dimensions(vdb):
    keys = await world(vdb)
    await add_instance(vdb, "alice", "emb3b", 3)
    await add_instance(vdb, "alice", "emb4", 4)
    await add_instance(vdb, "david", "demb", 3)
    rebind = lambda name, inst: upd(pb.Project(owner="alice", project_handle=name, instance=inst), ["instance"])  # noqa: E731
    # empty project: any dimensions
    resp = await vdb.projects.UpdateProject(rebind("pub", "emb4"), metadata=keys["owner"])
    assert resp.project.instance == "alice/emb4"
    # with embeddings: same dimensions only
    await add_embeddings(vdb, "alice", "proj", [("t1", None)])
    err = await rpc_error(
        vdb.projects.UpdateProject(rebind("proj", "emb4"), metadata=keys["owner"]), C.FAILED_PRECONDITION
    )
    assert "3" in err.details() and "4" in err.details()
    assert preconditions(err)[0][:2] == ("DIMENSION_MISMATCH", "project:alice/proj")
    resp = await vdb.projects.UpdateProject(rebind("proj", "alice/emb3b"), metadata=keys["owner"])
    assert (resp.project.instance, resp.project.number_of_embeddings) == ("alice/emb3b", 1)
    # an instance the owner may not use
    await rpc_error(
        vdb.projects.UpdateProject(rebind("proj", "david/demb"), metadata=keys["owner"]), C.PERMISSION_DENIED
    )
    err = await rpc_error(
        vdb.projects.UpdateProject(rebind("proj", "david/demb"), metadata=ADMIN), C.FAILED_PRECONDITION
    )
    assert preconditions(err)[0][0] == "INSTANCE_NOT_USABLE"
    # editors may not rebind either
    await rpc_error(vdb.projects.UpdateProject(rebind("proj", "emb"), metadata=keys["editor"]), C.PERMISSION_DENIED)


async def test_update_metadata_schema_checks_stored_metadata(vdb):
    keys = await world(vdb)
    good = [(f"ok{i}", {"year": 2000 + i}) for i in range(5)]
    bad = [(f"bad{i:02d}", {"year": "x"}) for i in range(14)] + [("nometa", None)]
    await add_embeddings(vdb, "alice", "proj", good + bad)
    req = upd(pb.Project(owner="alice", project_handle="proj", metadata_schema=SCHEMA_YEAR))
    err = await rpc_error(vdb.projects.UpdateProject(req, metadata=keys["owner"]), C.FAILED_PRECONDITION)
    assert "15 stored embedding(s)" in err.details()
    sample = preconditions(err)
    assert len(sample) == 10 and {s[0] for s in sample} == {"METADATA_SCHEMA_VIOLATION"}
    assert [s[1] for s in sample] == [f"embedding:bad{i:02d}" for i in range(10)]  # ordered by text_id
    assert sample[0][2] == 'at $.year: "x" is not of type "integer"'
    assert "'bad00'" in err.details()
    assert (await get(vdb, keys["owner"], "alice", "proj")).metadata_schema == ""  # unchanged
    # NULL metadata alone is a violation too
    async with vdb.pool.acquire() as conn:
        await conn.execute("DELETE FROM embeddings WHERE text_id LIKE 'bad%'")
    err = await rpc_error(vdb.projects.UpdateProject(req, metadata=keys["owner"]), C.FAILED_PRECONDITION)
    assert [s[1:] for s in preconditions(err)] == [
        ("embedding:nometa", "at $: metadata is required: the project has a metadata_schema")
    ]
    async with vdb.pool.acquire() as conn:
        await conn.execute("DELETE FROM embeddings WHERE text_id = 'nometa'")
    resp = await vdb.projects.UpdateProject(req, metadata=keys["owner"])
    assert resp.project.metadata_schema == SCHEMA_YEAR
    # a stricter schema that the stored data violates is refused; an invalid one is INVALID_ARGUMENT
    strict = json.dumps({"type": "object", "properties": {"year": {"maximum": 2001}}})
    err = await rpc_error(
        vdb.projects.UpdateProject(
            upd(pb.Project(owner="alice", project_handle="proj", metadata_schema=strict)), metadata=ADMIN
        ),
        C.FAILED_PRECONDITION,
    )
    assert [s[1] for s in preconditions(err)] == ["embedding:ok2", "embedding:ok3", "embedding:ok4"]
    err = await rpc_error(
        vdb.projects.UpdateProject(
            upd(pb.Project(owner="alice", project_handle="proj", metadata_schema='{"$ref": "http://evil/x"}')),
            metadata=ADMIN,
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "project.metadata_schema" and "never fetched" in err.details()
    # an empty project accepts any valid schema
    resp = await vdb.projects.UpdateProject(
        upd(pb.Project(owner="alice", project_handle="pub", metadata_schema=strict)), metadata=keys["owner"]
    )
    assert resp.project.metadata_schema == strict


# ------------------------------------------------------------------------------------------------ DeleteProject


async def test_delete_project_with_embeddings_and_shares(vdb):
    keys = await world(vdb)
    await add_embeddings(vdb, "alice", "proj", [("t1", None), ("t2", None)])
    req = pb.DeleteProjectRequest(owner="alice", project_handle="proj")
    for who in ("editor", "reader", "other"):
        await rpc_error(vdb.projects.DeleteProject(req, metadata=keys[who]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.DeleteProject(req, metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.projects.DeleteProject(
            pb.DeleteProjectRequest(owner="alice", project_handle="pub"), metadata=keys["other"]
        ),
        C.PERMISSION_DENIED,
    )
    resp = await vdb.projects.DeleteProject(req, metadata=keys["owner"])
    assert resp.deleted_embeddings == 2
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings") == 0
    assert await vdb.pool.fetchval("SELECT count(*) FROM projects_shared_with") == 0
    await rpc_error(vdb.projects.DeleteProject(req, metadata=keys["owner"]), C.NOT_FOUND)
    await rpc_error(vdb.projects.DeleteProject(req, metadata=keys["editor"]), C.PERMISSION_DENIED)  # share gone
    resp = await vdb.projects.DeleteProject(
        pb.DeleteProjectRequest(owner="alice", project_handle="pub"), metadata=ADMIN
    )
    assert resp.deleted_embeddings == 0
    await rpc_error(vdb.projects.DeleteProject(req, metadata=ADMIN), C.NOT_FOUND)


# ----------------------------------------------------------------------------- Share/Unshare/ListProjectShares


async def test_share_gives_access_and_changes_role(vdb):
    keys = await world(vdb)
    md = pb.GetProjectRequest(owner="alice", project_handle="proj")
    await rpc_error(vdb.projects.GetProject(md, metadata=keys["other"]), C.PERMISSION_DENIED)
    s = await share(vdb, keys["owner"], "alice", "proj", "david", "reader")
    assert (s.user_handle, s.role) == ("david", "reader")
    assert (await get(vdb, keys["other"], "alice", "proj")).role == "reader"
    await share(vdb, ADMIN, "alice", "proj", "david", "editor")  # re-share: role changes
    assert (await get(vdb, keys["other"], "alice", "proj")).role == "editor"
    shares = (await get(vdb, keys["owner"], "alice", "proj")).shares
    assert [(x.user_handle, x.role) for x in shares] == [("bobby", "editor"), ("carol", "reader"), ("david", "editor")]


async def test_share_refusals(vdb):
    keys = await world(vdb)
    req = lambda user="david", role="reader", handle="proj": pb.ShareProjectRequest(  # noqa: E731
        owner="alice", project_handle=handle, share=common_pb2.Share(user_handle=user, role=role)
    )
    for who in ("editor", "reader", "other"):
        await rpc_error(vdb.projects.ShareProject(req(), metadata=keys[who]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.ShareProject(req(handle="pub"), metadata=keys["other"]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.ShareProject(req(), metadata=ANON), C.UNAUTHENTICATED)
    for bad, field in ((req(role="owner"), "role"), (req(role=""), "role"), (req(user="alice"), "user_handle")):
        err = await rpc_error(vdb.projects.ShareProject(bad, metadata=keys["owner"]), C.INVALID_ARGUMENT)
        assert field_violations(err)[0][0] == field
    err = await rpc_error(vdb.projects.ShareProject(req(user="ghost"), metadata=keys["owner"]), C.NOT_FOUND)
    assert [d.resource_name for d in status_details(err)] == ["ghost"]
    await rpc_error(vdb.projects.ShareProject(req(handle="nope"), metadata=keys["owner"]), C.NOT_FOUND)
    await rpc_error(vdb.projects.ShareProject(req(handle="nope"), metadata=keys["other"]), C.PERMISSION_DENIED)


async def test_unshare_and_list_shares(vdb):
    keys = await world(vdb)
    lst = pb.ListProjectSharesRequest(owner="alice", project_handle="proj")
    for who in ("owner", "admin"):
        resp = await vdb.projects.ListProjectShares(lst, metadata=keys[who])
        assert [(s.user_handle, s.role) for s in resp.shares] == [("bobby", "editor"), ("carol", "reader")]
    for who in ("editor", "reader", "other"):
        await rpc_error(vdb.projects.ListProjectShares(lst, metadata=keys[who]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.ListProjectShares(lst, metadata=ANON), C.UNAUTHENTICATED)
    page = await vdb.projects.ListProjectShares(
        pb.ListProjectSharesRequest(owner="alice", project_handle="proj", page_size=1), metadata=keys["owner"]
    )
    assert [s.user_handle for s in page.shares] == ["bobby"] and page.next_page_token
    page = await vdb.projects.ListProjectShares(
        pb.ListProjectSharesRequest(owner="alice", project_handle="proj", page_size=1, page_token=page.next_page_token),
        metadata=keys["owner"],
    )
    assert [s.user_handle for s in page.shares] == ["carol"] and not page.next_page_token

    unshare = lambda user: pb.UnshareProjectRequest(owner="alice", project_handle="proj", user_handle=user)  # noqa: E731
    for who in ("editor", "reader", "other"):
        await rpc_error(vdb.projects.UnshareProject(unshare("carol"), metadata=keys[who]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.UnshareProject(unshare("carol"), metadata=ANON), C.UNAUTHENTICATED)
    await vdb.projects.UnshareProject(unshare("carol"), metadata=keys["owner"])
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="proj"), metadata=keys["reader"]),
        C.PERMISSION_DENIED,
    )
    await rpc_error(vdb.projects.UnshareProject(unshare("carol"), metadata=keys["owner"]), C.NOT_FOUND)
    await vdb.projects.UnshareProject(unshare("bobby"), metadata=ADMIN)
    resp = await vdb.projects.ListProjectShares(lst, metadata=keys["owner"])
    assert list(resp.shares) == [] and resp.next_page_token == ""


# ---------------------------------------------------------------------------------------------- TransferProject


async def test_transfer_moves_project_embeddings_and_shares(vdb):
    keys = await world(vdb)  # alice/emb is shared with bobby (reader): bobby may use it
    await add_embeddings(vdb, "alice", "proj", [("t1", None), ("t2", None)])
    req = pb.TransferProjectRequest(owner="alice", project_handle="proj", new_owner="bobby")
    resp = await vdb.projects.TransferProject(req, metadata=keys["owner"])
    assert (resp.project.owner, resp.project.role, resp.project.number_of_embeddings) == ("bobby", "", 2)
    assert list(resp.project.shares) == []  # the caller no longer manages it
    assert await vdb.pool.fetchval("SELECT array_agg(DISTINCT owner) FROM embeddings") == ["bobby"]
    p = await get(vdb, keys["editor"], "bobby", "proj")
    assert (p.role, p.instance) == ("owner", "alice/emb")
    assert [(s.user_handle, s.role) for s in p.shares] == [("carol", "reader")]  # bobby's own share dropped
    assert (await get(vdb, keys["reader"], "bobby", "proj")).role == "reader"
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="alice", project_handle="proj"), metadata=keys["owner"]),
        C.NOT_FOUND,
    )
    await rpc_error(
        vdb.projects.GetProject(pb.GetProjectRequest(owner="bobby", project_handle="proj"), metadata=keys["owner"]),
        C.PERMISSION_DENIED,
    )
    # and the admin may transfer it back
    resp = await vdb.projects.TransferProject(
        pb.TransferProjectRequest(owner="bobby", project_handle="proj", new_owner="alice"), metadata=ADMIN
    )
    assert (resp.project.owner, resp.project.role, [s.user_handle for s in resp.project.shares]) == (
        "alice",
        "admin",
        ["carol"],
    )


async def test_transfer_refusals(vdb):
    keys = await world(vdb)
    req = lambda new="bobby", handle="proj": pb.TransferProjectRequest(  # noqa: E731
        owner="alice", project_handle=handle, new_owner=new
    )
    for who in ("editor", "reader", "other"):
        await rpc_error(vdb.projects.TransferProject(req(), metadata=keys[who]), C.PERMISSION_DENIED)
    await rpc_error(vdb.projects.TransferProject(req(), metadata=ANON), C.UNAUTHENTICATED)
    # david may not use alice/emb
    err = await rpc_error(vdb.projects.TransferProject(req("david"), metadata=keys["owner"]), C.FAILED_PRECONDITION)
    assert "alice/emb" in err.details() and preconditions(err)[0][0] == "INSTANCE_NOT_USABLE"
    # bobby already has a project called proj
    await add_instance(vdb, "bobby", "bemb", 3)
    await create(vdb, keys["editor"], project("proj", instance="bemb"))
    err = await rpc_error(vdb.projects.TransferProject(req(), metadata=keys["owner"]), C.ALREADY_EXISTS)
    assert "bobby/proj" in err.details()
    await rpc_error(vdb.projects.TransferProject(req("ghost"), metadata=keys["owner"]), C.NOT_FOUND)
    await rpc_error(vdb.projects.TransferProject(req("alice"), metadata=keys["owner"]), C.INVALID_ARGUMENT)
    await rpc_error(vdb.projects.TransferProject(req("_system"), metadata=ADMIN), C.INVALID_ARGUMENT)
    await rpc_error(vdb.projects.TransferProject(req(handle="nope"), metadata=ADMIN), C.NOT_FOUND)
    assert (await get(vdb, keys["owner"], "alice", "proj")).owner == "alice"  # nothing moved


# --------------------------------------------------------------------- DeleteUser(force) leaves no instance


async def test_project_loses_instance_when_its_owner_is_force_deleted_and_can_be_rebound(vdb):
    await vdb.create_user("alice")
    bobby = bearer(await vdb.create_user("bobby"))
    await add_instance(vdb, "alice", "emb", 3, shared={"bobby": "reader"})
    await create(vdb, bobby, project("theirs", instance="alice/emb"))
    await add_embeddings(vdb, "bobby", "theirs", [("t1", None), ("t2", None)])
    await rpc_error(
        vdb.users.DeleteUser(user_pb2.DeleteUserRequest(user_handle="alice"), metadata=ADMIN), C.FAILED_PRECONDITION
    )
    resp = await vdb.users.DeleteUser(user_pb2.DeleteUserRequest(user_handle="alice", force=True), metadata=ADMIN)
    assert list(resp.detached_projects) == ["bobby/theirs"]

    p = await get(vdb, bobby, "bobby", "theirs")
    assert (p.instance, p.instance_missing, p.number_of_embeddings) == ("", True, 2)
    listed = await vdb.projects.ListProjects(pb.ListProjectsRequest(), metadata=bobby)
    assert [(x.instance, x.instance_missing) for x in listed.projects] == [("", True)]

    # rebinding: other dimensions than the stored embeddings are refused, the same dimensions accepted
    await add_instance(vdb, "bobby", "big", 4)
    await add_instance(vdb, "bobby", "mine", 3)
    rebind = lambda inst: upd(pb.Project(project_handle="theirs", instance=inst), ["instance"])  # noqa: E731
    err = await rpc_error(vdb.projects.UpdateProject(rebind("big"), metadata=bobby), C.FAILED_PRECONDITION)
    assert "not 4-dimensional" in err.details()
    resp = await vdb.projects.UpdateProject(rebind("mine"), metadata=bobby)
    assert (resp.project.instance, resp.project.instance_missing, resp.project.number_of_embeddings) == (
        "bobby/mine",
        False,
        2,
    )


# --------------------------------------------------------- resolve_project_access (for embeddings and search)


async def test_resolve_project_access_matrix(vdb):
    await world(vdb)
    users = {
        "admin": ADMIN_PRINCIPAL,
        "owner": Principal(PrincipalKind.USER, "alice"),
        "editor": Principal(PrincipalKind.USER, "bobby"),
        "reader": Principal(PrincipalKind.USER, "carol"),
        "other": Principal(PrincipalKind.USER, "david"),
        "anon": ANONYMOUS,
    }
    ok = {
        ("proj", "read"): {"admin", "owner", "editor", "reader"},
        ("proj", "write"): {"admin", "owner", "editor"},
        ("proj", "manage"): {"admin", "owner"},
        ("pub", "read"): set(users),
        ("pub", "write"): {"admin", "owner"},
        ("pub", "manage"): {"admin", "owner"},
    }
    async with vdb.pool.acquire() as conn:
        for (handle, need), allowed in ok.items():
            for who, principal in users.items():
                call = resolve_project_access(conn, principal, "alice", handle, need)  # type: ignore[arg-type]
                if who in allowed:
                    access = await call
                    assert (access.owner, access.project_handle, access.instance, access.dimensions) == (
                        "alice",
                        handle,
                        "alice/emb",
                        3,
                    )
                    assert access.require_instance()[1] == 3
                    assert access.public_read is (handle == "pub")
                else:
                    expected = Unauthenticated if who == "anon" else PermissionDenied
                    with pytest.raises(expected):
                        await call
        # absent: NOT_FOUND only for who would see it
        for who, exc in (
            ("admin", NotFound),
            ("owner", NotFound),
            ("editor", PermissionDenied),
            ("anon", Unauthenticated),
        ):
            with pytest.raises(exc):
                await resolve_project_access(conn, users[who], "alice", "nope", "read")
        # a lock can be taken inside a transaction
        async with conn.transaction():
            access = await resolve_project_access(conn, users["editor"], "alice", "proj", "write", lock="share")
            assert access.role == "editor" and access.metadata_schema is None
        await conn.execute("UPDATE projects SET llm_service_instance_id = NULL WHERE project_handle = 'proj'")
        access = await resolve_project_access(conn, users["owner"], "", "proj", "read")
        assert (access.instance_id, access.instance, access.dimensions) == (None, None, None)
        with pytest.raises(FailedPrecondition, match=NO_INSTANCE_MESSAGE):
            access.require_instance()
