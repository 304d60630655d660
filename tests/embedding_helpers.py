"""Shared helpers of the embedding tests: users, instances and projects written by SQL, message builders."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from harness import ADMIN, ANON, Harness, bearer

from vdb_grpc.v1 import embedding_pb2 as pb

DIMS = 4
SCHEMA = json.dumps(
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "year": {"type": "integer"},
            "author": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
        "required": ["year"],
    }
)


@dataclass
class World:
    """Users and projects of the permission tests: alice owns everything."""

    vdb: Harness
    keys: dict[str, str]
    project_ids: dict[str, int]

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        """Call metadata for ``who`` (admin, anon or a user handle)."""
        if who == "admin":
            return ADMIN
        if who == "anon":
            return ANON
        return bearer(self.keys[who])

    async def count(self, project: str = "proj") -> int:
        return int(
            await self.vdb.pool.fetchval(
                "SELECT count(*) FROM embeddings WHERE project_id = $1", self.project_ids[project]
            )
        )

    async def rows(self, project: str = "proj") -> dict[str, Any]:
        """text_id → (vector as float32 list, text, metadata) of everything stored in ``project``."""
        records = await self.vdb.pool.fetch(
            "SELECT text_id, vector, text, metadata FROM embeddings WHERE project_id = $1", self.project_ids[project]
        )
        return {
            r["text_id"]: (r["vector"].tolist(), r["text"], json.loads(r["metadata"]) if r["metadata"] else None)
            for r in records
        }

    async def indexed(self, project: str = "proj") -> dict[str, bool]:
        """text_id → the ``indexed`` flag."""
        records = await self.vdb.pool.fetch(
            "SELECT text_id, indexed FROM embeddings WHERE project_id = $1", self.project_ids[project]
        )
        return {r["text_id"]: r["indexed"] for r in records}


async def add_instance(vdb: Harness, owner: str, handle: str, dims: int) -> int:
    return int(
        await vdb.pool.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ($1, $2, 'https://example.org/embed', 'openai', 'm', $3) RETURNING instance_id",
            handle,
            owner,
            dims,
        )
    )


async def add_project(
    vdb: Harness, owner: str, handle: str, instance_id: int | None, *, public: bool = False, schema: str | None = None
) -> int:
    return int(
        await vdb.pool.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id, public_read, metadata_scheme)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING project_id",
            handle,
            owner,
            instance_id,
            public,
            schema,
        )
    )


async def make_world(vdb: Harness) -> World:
    """alice owns proj (shared: eddie editor, rita reader), pub (public_read, same shares), schema (with a
    metadata_schema) and orphan (no instance); oscar is a stranger. Instances have DIMS dimensions."""
    keys = {u: await vdb.create_user(u) for u in ("alice", "eddie", "rita", "oscar")}
    inst = await add_instance(vdb, "alice", "inst", DIMS)
    other = await add_instance(vdb, "alice", "other", DIMS)
    ids = {
        "proj": await add_project(vdb, "alice", "proj", inst),
        "pub": await add_project(vdb, "alice", "pub", inst, public=True),
        "schema": await add_project(vdb, "alice", "schema", other, schema=SCHEMA),
        "orphan": await add_project(vdb, "alice", "orphan", None),
    }
    for project in ("proj", "pub"):
        await vdb.pool.execute(
            "INSERT INTO projects_shared_with (user_handle, project_id, role) VALUES ('eddie', $1, 'editor'),"
            " ('rita', $1, 'reader')",
            ids[project],
        )
    return World(vdb, keys, ids)


@asynccontextmanager
async def server_with(db_uri: str, settings: Any, *, indexer: bool = True, **changes: Any) -> AsyncIterator[Harness]:
    """A second server on the test's database with other settings (``indexer=False``: background indexer off)."""
    from vdb_grpc.db import create_pool
    from vdb_grpc.server import build_server

    settings = settings.replace(**changes)
    pool = await create_pool(db_uri, settings)
    server = build_server(settings, pool)
    await server.start()
    if not indexer and server.indexer is not None:
        await server.indexer.stop()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Harness(channel=channel, pool=pool, port=server.port)
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()


def emb(text_id: str, vector: Any = (0.5, -0.25, 1.0, 2.0), **kw: Any) -> pb.Embedding:
    """An Embedding message; ``metadata`` may be a dict."""
    return pb.Embedding(text_id=text_id, vector=list(vector), **kw)


def error_info(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The metadata of the google.rpc.ErrorInfo detail of a failed call ({} when there is none)."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    assert info.domain == "vdb-grpc"
                    return {"reason": info.reason, **dict(info.metadata)}
    return {}
