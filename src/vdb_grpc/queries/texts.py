"""SQL for server-side embedding: an instance as a provider call needs it, and the vectors a text may reuse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.providers.shape import ProviderTarget


@dataclass(frozen=True, eq=False)
class StoredText:
    """What an embedding holds that decides whether UpsertTexts may reuse its vector."""

    text: str | None
    vector: np.ndarray[Any, np.dtype[np.float32]]
    digest: bytes


TARGET_COLUMNS = """
i.instance_id, i.owner, i.instance_handle, i.endpoint, i.api_standard, i.model, i.dimensions, i.context_limit,
i.api_key_encrypted, i.api_key, s.key_method, s.key_field, s.request_shape, s.key_optional, s.max_inputs
"""


def _target(r: asyncpg.Record) -> ProviderTarget:
    encrypted = r["api_key_encrypted"]
    return ProviderTarget(
        instance=f"{r['owner']}/{r['instance_handle']}",
        instance_id=r["instance_id"],
        endpoint=r["endpoint"],
        api_standard=r["api_standard"],
        shape=r["request_shape"] or "",
        model=r["model"],
        dimensions=r["dimensions"],
        context_limit=r["context_limit"],
        key_method=r["key_method"],
        key_field=r["key_field"] or "",
        key_optional=r["key_optional"],
        max_inputs=r["max_inputs"],
        encrypted_key=bytes(encrypted) if encrypted is not None else None,
        legacy_key=r["api_key"] or None,
    )


TARGET_BY_ID = f"""
SELECT {TARGET_COLUMNS}
FROM llm_service_instances i JOIN api_standards s ON s.api_standard_handle = i.api_standard
WHERE i.instance_id = $1
"""


async def provider_target(conn: asyncpg.Connection, instance_id: int) -> ProviderTarget | None:
    """The instance ``instance_id`` with its standard and stored key; None when gone."""
    row = await conn.fetchrow(TARGET_BY_ID, instance_id)
    return _target(row) if row else None


TARGET_BY_NAME = f"""
SELECT {TARGET_COLUMNS}, CASE WHEN i.owner = $3 THEN 'owner' ELSE sw.role END AS role
FROM llm_service_instances i
JOIN api_standards s ON s.api_standard_handle = i.api_standard
LEFT JOIN llm_service_instances_shared_with sw ON sw.instance_id = i.instance_id AND sw.user_handle = $3
WHERE i.owner = $1 AND i.instance_handle = $2
"""


async def provider_target_by_name(
    conn: asyncpg.Connection, owner: str, handle: str, caller: str | None
) -> tuple[ProviderTarget, str | None] | None:
    """The instance ``owner/handle`` and ``caller``'s role on it ("owner", "editor", "reader", None); None when
    absent."""
    row = await conn.fetchrow(TARGET_BY_NAME, owner, handle, caller)
    return (_target(row), row["role"]) if row else None


STORED_TEXTS = """
SELECT text_id, text, vector, text_embedding_digest FROM embeddings
WHERE project_id = $1 AND text_id = ANY($2::text[]) AND text_embedding_digest IS NOT NULL
"""


async def stored_texts(conn: asyncpg.Connection, project_id: int, text_ids: list[str]) -> dict[str, StoredText]:
    """The rows among ``text_ids`` that UpsertTexts wrote a digest for, by text_id."""
    rows = await conn.fetch(STORED_TEXTS, project_id, text_ids)
    return {
        r["text_id"]: StoredText(text=r["text"], vector=r["vector"], digest=bytes(r["text_embedding_digest"]))
        for r in rows
    }


SET_DIGESTS = """
UPDATE embeddings e SET text_embedding_digest = u.digest
FROM unnest($2::text[], $3::bytea[]) AS u (text_id, digest)
WHERE e.project_id = $1 AND e.text_id = u.text_id
"""


async def set_digests(conn: asyncpg.Connection, project_id: int, text_ids: list[str], digests: list[bytes]) -> None:
    """Record the digests of vectors UpsertTexts stored."""
    await conn.execute(SET_DIGESTS, project_id, text_ids, digests)
