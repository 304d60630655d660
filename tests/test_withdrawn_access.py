"""Withdrawn access to an instance is not used again: UnshareInstance and DeleteInstance refuse while projects
are bound to it, or unbind them with ``force``; uploads and searches refuse an instance the owner lost."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, Harness, bearer, rpc_error, status_details
from llm_helpers import create_instance, share_instance

from vdb_grpc.v1 import embedding_pb2 as epb
from vdb_grpc.v1 import llm_instance_pb2 as ipb
from vdb_grpc.v1 import project_pb2 as ppb

C = grpc.StatusCode


class World:
    """alice owns instance emb (3 dims) and shares it with rita as reader; rita's project rproj and alice's ap are
    bound to it, each with one embedding."""

    def __init__(self, vdb: Harness, alice: str, rita: str) -> None:
        self.vdb, self.alice, self.rita = vdb, alice, rita

    async def project(self, key: str, owner: str, handle: str) -> ppb.Project:
        resp = await self.vdb.projects.GetProject(
            ppb.GetProjectRequest(owner=owner, project_handle=handle), metadata=bearer(key)
        )
        return resp.project

    def upload(self, key: str, owner: str, handle: str, text_id: str = "x") -> object:
        return self.vdb.embeddings.UpsertEmbeddings(
            epb.UpsertEmbeddingsRequest(
                owner=owner, project_handle=handle, embeddings=[epb.Embedding(text_id=text_id, vector=[1, 2, 3])]
            ),
            metadata=bearer(key),
        )

    def search(self, key: str, owner: str, handle: str) -> object:
        return self.vdb.embeddings.SearchSimilar(
            epb.SearchSimilarRequest(owner=owner, project_handle=handle, vector=epb.QueryVector(values=[1, 2, 3])),
            metadata=bearer(key),
        )

    async def embeddings(self, owner: str, handle: str) -> int:
        return int(
            await self.vdb.pool.fetchval(
                "SELECT count(*) FROM embeddings e JOIN projects p USING (project_id)"
                " WHERE p.owner = $1 AND p.project_handle = $2",
                owner,
                handle,
            )
        )


@pytest.fixture
async def world(vdb: Harness) -> World:
    alice, rita = await vdb.create_user("alice"), await vdb.create_user("rita")
    await create_instance(vdb, alice, "emb")
    await share_instance(vdb, "alice", "emb", "rita", "reader")
    w = World(vdb, alice, rita)
    for key, owner, handle in ((rita, "rita", "rproj"), (alice, "alice", "aproj")):
        await vdb.projects.CreateProject(
            ppb.CreateProjectRequest(project=ppb.Project(project_handle=handle, instance="alice/emb")),
            metadata=bearer(key),
        )
        await w.upload(key, owner, handle, "kept")
    return w


def unshare(force: bool = False) -> ipb.UnshareInstanceRequest:
    return ipb.UnshareInstanceRequest(owner="alice", instance_handle="emb", user_handle="rita", force=force)


async def test_unshare_is_refused_while_the_users_projects_are_bound(world: World) -> None:
    err = await rpc_error(
        world.vdb.instances.UnshareInstance(unshare(), metadata=bearer(world.alice)), C.FAILED_PRECONDITION
    )
    assert "rita/rproj" in (err.details() or "") and "force" in (err.details() or "")
    assert [v.subject for d in status_details(err) for v in getattr(d, "violations", [])] == ["project:rita/rproj"]
    # nothing changed: the share and the binding stay, rita still uploads
    await world.upload(world.rita, "rita", "rproj")
    assert (await world.project(world.rita, "rita", "rproj")).instance == "alice/emb"


async def test_unshare_with_force_unbinds_the_users_projects_and_they_keep_their_embeddings(world: World) -> None:
    resp = await world.vdb.instances.UnshareInstance(unshare(force=True), metadata=bearer(world.alice))
    assert resp.removed and list(resp.detached_projects) == ["rita/rproj"]
    project = await world.project(world.rita, "rita", "rproj")
    assert project.instance_missing and project.instance == ""
    assert await world.embeddings("rita", "rproj") == 1
    await rpc_error(world.upload(world.rita, "rita", "rproj"), C.FAILED_PRECONDITION)
    await rpc_error(world.search(world.rita, "rita", "rproj"), C.FAILED_PRECONDITION)
    # rebinding to the instance she lost is refused
    await rpc_error(
        world.vdb.projects.UpdateProject(
            ppb.UpdateProjectRequest(
                project=ppb.Project(project_handle="rproj", instance="alice/emb"),
                update_mask=FieldMask(paths=["instance"]),
            ),
            metadata=bearer(world.rita),
        ),
        C.PERMISSION_DENIED,
    )
    # the owner's own project is untouched
    assert (await world.project(world.alice, "alice", "aproj")).instance == "alice/emb"
    await world.upload(world.alice, "alice", "aproj")


async def test_delete_instance_is_refused_while_bound_and_unbinds_everyone_with_force(world: World) -> None:
    delete = ipb.DeleteInstanceRequest(owner="alice", instance_handle="emb")
    err = await rpc_error(
        world.vdb.instances.DeleteInstance(delete, metadata=bearer(world.alice)), C.FAILED_PRECONDITION
    )
    assert "alice/aproj" in (err.details() or "") and "rita/rproj" in (err.details() or "")
    assert await world.vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 1

    delete.force = True
    resp = await world.vdb.instances.DeleteInstance(delete, metadata=bearer(world.alice))
    assert list(resp.detached_projects) == ["alice/aproj", "rita/rproj"]
    assert await world.vdb.pool.fetchval("SELECT count(*) FROM llm_service_instances") == 0
    for key, owner, handle in ((world.alice, "alice", "aproj"), (world.rita, "rita", "rproj")):
        assert (await world.project(key, owner, handle)).instance_missing
        assert await world.embeddings(owner, handle) == 1
        await rpc_error(world.upload(key, owner, handle), C.FAILED_PRECONDITION)


async def test_only_the_owner_or_admin_may_force(world: World) -> None:
    await rpc_error(
        world.vdb.instances.UnshareInstance(unshare(force=True), metadata=bearer(world.rita)), C.PERMISSION_DENIED
    )
    await rpc_error(
        world.vdb.instances.DeleteInstance(
            ipb.DeleteInstanceRequest(owner="alice", instance_handle="emb", force=True), metadata=bearer(world.rita)
        ),
        C.PERMISSION_DENIED,
    )
    assert (await world.project(world.rita, "rita", "rproj")).instance == "alice/emb"
    resp = await world.vdb.instances.UnshareInstance(unshare(force=True), metadata=ADMIN)
    assert list(resp.detached_projects) == ["rita/rproj"]


@pytest.mark.auth_cache_off
async def test_uploads_and_searches_refuse_an_instance_the_owner_may_no_longer_use(world: World) -> None:
    """A share removed behind the service's back (SQL, or a race with a binding) is still not used."""
    await world.vdb.pool.execute("DELETE FROM llm_service_instances_shared_with WHERE user_handle = 'rita'")
    err = await rpc_error(world.upload(world.rita, "rita", "rproj"), C.FAILED_PRECONDITION)
    assert "may no longer use instance 'alice/emb'" in (err.details() or "")
    await rpc_error(world.search(world.rita, "rita", "rproj"), C.FAILED_PRECONDITION)
    assert await world.embeddings("rita", "rproj") == 1
    await world.upload(world.alice, "alice", "aproj")  # the owner's own project is fine


async def test_unshare_with_force_racing_uploads_is_never_aborted(world: World) -> None:
    """Uploads lock project then instance; the unshare locks the instance, then unbinds the project. Whoever
    loses a deadlock between them is retried inside the service: no ABORTED, and no upload lands after."""
    vdb = world.vdb
    for _ in range(5):

        async def upload(n: int) -> str:
            try:
                await world.upload(world.rita, "rita", "rproj", f"u{n}")
            except grpc.aio.AioRpcError as err:
                return err.code().name
            return "OK"

        results = await asyncio.gather(
            *(upload(n) for n in range(4)),
            vdb.instances.UnshareInstance(unshare(force=True), metadata=bearer(world.alice)),
        )
        codes, resp = results[:4], results[4]
        assert list(resp.detached_projects) == ["rita/rproj"]
        assert set(codes) <= {"OK", "FAILED_PRECONDITION"}, codes
        await rpc_error(world.upload(world.rita, "rita", "rproj", "late"), C.FAILED_PRECONDITION)
        # bind again for the next round
        await share_instance(vdb, "alice", "emb", "rita", "reader")
        await vdb.projects.UpdateProject(
            ppb.UpdateProjectRequest(
                project=ppb.Project(project_handle="rproj", instance="alice/emb"),
                update_mask=FieldMask(paths=["instance"]),
            ),
            metadata=bearer(world.rita),
        )
