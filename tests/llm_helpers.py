"""Helpers for the LLM definition/instance, admin, secrecy and rotation tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
from harness import ADMIN, Harness, bearer

from vdb_grpc.settings import Settings
from vdb_grpc.v1 import llm_definition_pb2 as dpb
from vdb_grpc.v1 import llm_instance_pb2 as ipb

C = grpc.StatusCode
BUILTIN = [
    ("_system", "cohere-multilingual-v3"),
    ("_system", "cohere-v4"),
    ("_system", "gemini-embedding-001"),
    ("_system", "openai-large"),
    ("_system", "openai-small"),
]


@asynccontextmanager
async def running_server(db_uri: str, settings: Settings, *, listen_dsn: str | None = None) -> AsyncIterator[Harness]:
    """A server built like the ``vdb`` fixture builds it, with other settings, on the same database
    (``listen_dsn``: hear other replicas' access changes, as ``vdb-grpc serve`` does)."""
    from vdb_grpc.db import create_pool
    from vdb_grpc.server import build_server

    pool = await create_pool(db_uri, settings)
    server = build_server(settings, pool, listen_dsn=listen_dsn)
    await server.start()
    if server.replicas is not None:
        await asyncio.wait_for(server.replicas.listening.wait(), timeout=10)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Harness(channel=channel, pool=pool, port=server.port)
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()


def definition(handle: str, owner: str = "", **overrides: Any) -> dpb.LlmDefinition:
    """A valid definition message (3 dimensions), with ``overrides``."""
    values: dict[str, Any] = {
        "owner": owner,
        "definition_handle": handle,
        "endpoint": "https://llm.example.org/v1/embeddings",
        "description": f"definition {handle}",
        "api_standard": "openai",
        "model": "emb-model",
        "dimensions": 3,
        "context_limit": 512,
    }
    values.update(overrides)
    return dpb.LlmDefinition(**values)


def instance(handle: str, owner: str = "", **overrides: Any) -> ipb.LlmInstance:
    """A valid instance message (3 dimensions, no key), with ``overrides``."""
    values: dict[str, Any] = {
        "owner": owner,
        "instance_handle": handle,
        "endpoint": "https://llm.example.org/v1/embeddings",
        "description": f"instance {handle}",
        "api_standard": "openai",
        "model": "emb-model",
        "dimensions": 3,
        "context_limit": 512,
    }
    values.update(overrides)
    return ipb.LlmInstance(**values)


async def create_definition(vdb: Harness, key: str, handle: str, **overrides: Any) -> dpb.LlmDefinition:
    """Create a definition with ``key`` (owner = the key's user unless given)."""
    resp = await vdb.definitions.CreateDefinition(
        dpb.CreateDefinitionRequest(definition=definition(handle, **overrides)), metadata=bearer(key)
    )
    return resp.definition


async def create_instance(vdb: Harness, key: str, handle: str, **overrides: Any) -> ipb.LlmInstance:
    """Create an instance with ``key`` (owner = the key's user unless given)."""
    resp = await vdb.instances.CreateInstance(
        ipb.CreateInstanceRequest(instance=instance(handle, **overrides)), metadata=bearer(key)
    )
    return resp.instance


async def share_instance(vdb: Harness, owner: str, handle: str, user: str, role: str) -> None:
    """Share an instance as the admin."""
    from vdb_grpc.v1 import common_pb2

    await vdb.instances.ShareInstance(
        ipb.ShareInstanceRequest(
            owner=owner, instance_handle=handle, share=common_pb2.Share(user_handle=user, role=role)
        ),
        metadata=ADMIN,
    )


async def add_project(
    pool: asyncpg.Pool, owner: str, project: str, instance_owner: str, instance_handle: str, *, embeddings: int = 0
) -> int:
    """Insert a project bound to an instance (and ``embeddings`` 3-dimensional embeddings) directly in SQL."""
    async with pool.acquire() as conn, conn.transaction():
        iid = await conn.fetchval(
            "SELECT instance_id FROM llm_service_instances WHERE owner = $1 AND instance_handle = $2",
            instance_owner,
            instance_handle,
        )
        pid = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ($1, $2, $3)"
            " RETURNING project_id",
            project,
            owner,
            iid,
        )
        for n in range(embeddings):
            await conn.execute(
                "INSERT INTO embeddings (text_id, owner, project_id, llm_service_instance_id, vector, vector_dim)"
                " VALUES ($1, $2, $3, $4, '[1,2,3]'::halfvec, 3)",
                f"t{n}",
                owner,
                pid,
                iid,
            )
    return int(pid)


async def stored_key(pool: asyncpg.Pool, owner: str, handle: str) -> tuple[bytes | None, str | None]:
    """(api_key_encrypted, legacy api_key) of an instance, straight from the table."""
    row = await pool.fetchrow(
        "SELECT api_key_encrypted, api_key FROM llm_service_instances WHERE owner = $1 AND instance_handle = $2",
        owner,
        handle,
    )
    assert row is not None
    blob = row["api_key_encrypted"]
    return (bytes(blob) if blob is not None else None), row["api_key"]


async def database_text(pool: asyncpg.Pool) -> str:
    """Every row of every table in ``public`` rendered as text (bytea as hex), for secret scans."""
    tables = await pool.fetch(
        "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    parts = []
    for t in tables:
        rows = await pool.fetch(f"SELECT x::text AS v FROM {t['t']} x")
        parts.extend(r["v"] for r in rows)
    return "\n".join(parts)
