"""Data helpers for the search and indexer tests: users, instances, projects and embeddings written by SQL."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.auth import hash_api_key


async def make_user(conn: asyncpg.Connection, handle: str) -> str:
    """Create a user; return their API key."""
    key = f"{handle}-key-0123456789abcdef0123456789abcdef"
    await conn.execute(
        "INSERT INTO users (user_handle, name, email, vdb_api_key) VALUES ($1::text, $1::text, $1::text || '@example.org', $2)",
        handle,
        hash_api_key(key),
    )
    return key


async def make_project(
    conn: asyncpg.Connection, owner: str, handle: str, dims: int | None, *, public_read: bool = False
) -> int:
    """A project bound to a fresh instance of ``dims`` dimensions (None: no instance); returns project_id."""
    instance_id = None
    if dims is not None:
        instance_id = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ($1, $2, 'https://example.org/embed', 'openai', 'm', $3) RETURNING instance_id",
            f"i-{handle}"[:20],
            owner,
            dims,
        )
    return int(
        await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id, public_read)"
            " VALUES ($1, $2, $3, $4) RETURNING project_id",
            handle,
            owner,
            instance_id,
            public_read,
        )
    )


async def share(conn: asyncpg.Connection, project_id: int, user: str, role: str = "reader") -> None:
    """Share a project with ``user``."""
    await conn.execute(
        "INSERT INTO projects_shared_with (user_handle, project_id, role) VALUES ($1, $2, $3)", user, project_id, role
    )


async def add_embeddings(
    conn: asyncpg.Connection,
    project_id: int,
    owner: str,
    vectors: Any,
    *,
    prefix: str = "t",
    ids: list[str] | None = None,
    metadata: list[Any] | None = None,
    texts: list[str | None] | None = None,
    indexed: bool = False,
) -> list[str]:
    """COPY rows into embeddings (as an upload would: ``indexed`` false); returns their text_ids."""
    vectors = [np.asarray(v, dtype=np.float32) for v in vectors]
    ids = ids or [f"{prefix}{i:05d}" for i in range(len(vectors))]
    records = [
        (
            ids[i],
            owner,
            project_id,
            v,
            int(v.shape[0]),
            json.dumps(metadata[i]) if metadata is not None and metadata[i] is not None else None,
            texts[i] if texts is not None else None,
            indexed,
        )
        for i, v in enumerate(vectors)
    ]
    await conn.copy_records_to_table(
        "embeddings",
        records=records,
        columns=["text_id", "owner", "project_id", "vector", "vector_dim", "metadata", "text", "indexed"],
    )
    return ids


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.6) -> np.ndarray[Any, Any]:
    """``n`` float16-rounded vectors around ``clusters`` random unit centres (spread = noise norm)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    x = centres[labels] + rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return x.astype(np.float16).astype(np.float32)  # type: ignore[no-any-return]


def exact_top(
    x: np.ndarray[Any, Any], q: np.ndarray[Any, Any], k: int, keep: np.ndarray[Any, Any] | None = None
) -> list[int]:
    """Indices of the ``k`` rows most cosine-similar to ``q`` (numpy, the ground truth)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ (q / np.linalg.norm(q))
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    return [int(i) for i in np.argsort(-s, kind="stable")[:k]]
