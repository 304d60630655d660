"""Races between an upload and a change of the instance it depends on."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from harness import rpc_error
from llm_helpers import add_project, create_instance

from vdb_grpc.auth import ADMIN as ADMIN_PRINCIPAL
from vdb_grpc.domain.projects import resolve_project_access
from vdb_grpc.v1 import llm_instance_pb2 as ipb


async def test_dimension_change_waits_for_an_upload_in_flight_and_then_refuses(vdb):
    key = await vdb.create_user("alice")
    await create_instance(vdb, key, "emb3", dimensions=3)
    await add_project(vdb.pool, "alice", "proj", "alice", "emb3")
    change = ipb.UpdateInstanceRequest(
        instance=ipb.LlmInstance(owner="alice", instance_handle="emb3", dimensions=4),
        update_mask=FieldMask(paths=["dimensions"]),
    )
    async with vdb.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        # what an upload does first: resolve the project for writing, locking it and its instance's dimensions
        access = await resolve_project_access(conn, ADMIN_PRINCIPAL, "alice", "proj", "write", lock="share")
        assert access.dimensions == 3
        pending = asyncio.ensure_future(
            vdb.instances.UpdateInstance(change, metadata=(("authorization", f"Bearer {key}"),))
        )
        await asyncio.sleep(0.5)
        assert not pending.done(), "the dimension change did not wait for the upload"
        await conn.execute(
            "INSERT INTO embeddings (text_id, owner, project_id, llm_service_instance_id, vector, vector_dim)"
            " VALUES ('t1', 'alice', $1, $2, '[1,2,3]'::halfvec, 3)",
            access.project_id,
            access.instance_id,
        )
        await tx.commit()
    await rpc_error(pending, grpc.StatusCode.FAILED_PRECONDITION)
    dims = await vdb.pool.fetchval("SELECT dimensions FROM llm_service_instances WHERE instance_handle = 'emb3'")
    assert dims == 3
