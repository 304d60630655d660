"""The yoyo migrations against a real PostgreSQL + pgvector: rollbacks restore the exact previous schema, 0004
moves a populated pre-refactor database to the new shape and back, and the `yoyo` CLI applies them."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import psycopg
import pytest

from vdb_grpc.migrate import apply_migrations, rollback_migrations, yoyo_url

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
MIGRATION_IDS = sorted(
    p.name.removesuffix(".sql") for p in MIGRATIONS.glob("*.sql") if not p.name.endswith(".rollback.sql")
)
M1 = "0001.initial-schema"
M2 = "0002.hnsw-indexes"
M3 = "0003.project-public-read"
M4 = "0004.llm-service-definitions-and-instances"

TABLES_0003 = {
    "users", "vdb_roles", "projects", "users_projects", "key_methods", "api_standards", "llm_services",
    "users_llm_services", "projects_llm_services", "embeddings",
}  # fmt: skip
TABLES_0004 = (TABLES_0003 - {"llm_services", "users_llm_services", "projects_llm_services"}) | {
    "llm_service_definitions", "llm_service_definitions_shared_with", "llm_service_instances",
    "llm_service_instances_shared_with",
}  # fmt: skip

# yoyo's bookkeeping tables (_yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock) are not part of our schema.
NOT_YOYO = "c.relname NOT LIKE '%yoyo%'"


async def apply(uri: str, up_to: str | None = None) -> list[str]:
    return await asyncio.to_thread(apply_migrations, uri, MIGRATIONS, up_to=up_to)


async def rollback(uri: str, down_to: str | None = None) -> list[str]:
    return await asyncio.to_thread(rollback_migrations, uri, MIGRATIONS, down_to=down_to)


@asynccontextmanager
async def connect(uri: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(uri)
    try:
        yield conn
    finally:
        await conn.close()


async def _tuples(conn: asyncpg.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch(sql, *args)]


async def schema_snapshot(uri: str) -> dict[str, Any]:
    """Everything that makes up the schema of ``public`` (yoyo's tables excluded), in a comparable form."""
    async with connect(uri) as conn:
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for table, *column in await _tuples(
            conn,
            f"""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
              AND {NOT_YOYO}
            ORDER BY c.relname, a.attnum
            """,
        ):
            columns.setdefault(table, []).append(tuple(column))
        constraints = await _tuples(
            conn,
            f"""
            SELECT c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND {NOT_YOYO}
            ORDER BY 1, 2
            """,
        )
        indexes = await _tuples(
            conn,
            """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'
            ORDER BY 1, 2
            """,
        )
        sequences = await _tuples(
            conn,
            """
            SELECT s.relname, format_type(seq.seqtypid, NULL), t.relname, a.attname
            FROM pg_class s
            JOIN pg_namespace n ON n.oid = s.relnamespace
            JOIN pg_sequence seq ON seq.seqrelid = s.oid
            LEFT JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
                 AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
            LEFT JOIN pg_class t ON t.oid = d.refobjid
            LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
            WHERE n.nspname = 'public' AND s.relkind = 'S' AND s.relname NOT LIKE '%yoyo%'
            ORDER BY 1
            """,
        )
        other = await _tuples(
            conn,
            f"""
            SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind NOT IN ('r', 'i', 'S') AND {NOT_YOYO}
            ORDER BY 1
            """,
        )
    return {
        "tables": sorted(columns),
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "sequences": sequences,
        "other_relations": other,
    }


# Reference rows the migrations write (timestamps left out: they differ between two runs).
REFERENCE_COLUMNS = {
    "vdb_roles": "vdb_role",
    "key_methods": "key_method",
    "api_standards": "api_standard_handle, description, key_method, key_field",
    "users": "user_handle, name, email, vdb_api_key",
    "llm_service_definitions": (
        "owner, definition_handle, endpoint, description, api_standard, model, dimensions, context_limit, is_public"
    ),
}


async def reference_data(uri: str) -> dict[str, list[tuple[Any, ...]]]:
    data = {}
    async with connect(uri) as conn:
        for table, cols in REFERENCE_COLUMNS.items():
            if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
                data[table] = await _tuples(conn, f"SELECT {cols} FROM {table} ORDER BY {cols}")
    return data


# --- (a) rollbacks restore the previous schema -------------------------------------------------------------


async def test_migration_files_are_paired_and_chained() -> None:
    assert MIGRATION_IDS[:4] == [M1, M2, M3, M4]
    for i, mid in enumerate(MIGRATION_IDS):
        assert (MIGRATIONS / f"{mid}.rollback.sql").is_file(), f"{mid} has no rollback"
        text = (MIGRATIONS / f"{mid}.sql").read_text()
        assert text.startswith("-- "), f"{mid} must start with a comment saying what and why"
        if i > 0:
            assert f"-- depends: {MIGRATION_IDS[i - 1]}" in text, f"{mid} must depend on its predecessor"


async def test_each_rollback_restores_the_previous_schema_and_reapplying_gives_the_same(
    empty_database_factory,
) -> None:  # type: ignore[no-untyped-def]
    """Apply one by one (snapshot after each), roll back one by one (each must restore the snapshot before it,
    ending with nothing of ours), then apply all at once: the same schema and reference rows as before."""
    uri = await empty_database_factory()
    snapshots = [(await schema_snapshot(uri), await reference_data(uri))]
    assert snapshots[0][0]["tables"] == []
    for mid in MIGRATION_IDS:
        assert await apply(uri, up_to=mid) == [mid]
        snapshots.append((await schema_snapshot(uri), await reference_data(uri)))
        assert snapshots[-1][0] != snapshots[-2][0], f"{mid} changed nothing"
    assert set(snapshots[-1][0]["tables"]) >= TABLES_0004 - {"users_projects"}  # a later one may replace that

    for i in range(len(MIGRATION_IDS) - 1, -1, -1):
        mid, previous = MIGRATION_IDS[i], MIGRATION_IDS[i - 1] if i else None
        assert await rollback(uri, down_to=previous) == [mid]
        schema, data = snapshots[i]
        assert await schema_snapshot(uri) == schema, f"rolling back {mid} did not restore the schema"
        assert await reference_data(uri) == data, f"rolling back {mid} did not restore the reference rows"
    # Now equal to the snapshot of the empty database: no table, index, sequence or type of ours is left.
    async with connect(uri) as conn:
        # The vector extension stays: the rollback of 0001 leaves it alone.
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 1

    assert await apply(uri) == MIGRATION_IDS
    schema, data = snapshots[-1]
    assert await schema_snapshot(uri) == schema
    assert await reference_data(uri) == data


async def test_0004_schema_names_look_freshly_created(empty_database_factory) -> None:  # type: ignore[no-untyped-def]
    """After the renames in 0004 every name is the one PostgreSQL gives a table created under the new names."""
    uri = await empty_database_factory()
    await apply(uri, up_to=M4)
    snapshot = await schema_snapshot(uri)
    assert set(snapshot["tables"]) == TABLES_0004
    async with connect(uri) as conn:
        constraints = await conn.fetch(
            """
            SELECT c.relname AS tbl, con.conname, con.contype::text AS kind,
                   array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, i)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                         ORDER BY k.i) AS cols
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relname NOT LIKE '%yoyo%'
            """
        )
    suffix = {"p": "pkey", "u": "key", "f": "fkey", "n": "not_null", "c": "check"}
    for con in constraints:
        wanted = f"{con['tbl']}_pkey" if con["kind"] == "p" else (
            f"{con['tbl']}_{'_'.join(con['cols'])}_{suffix[con['kind']]}"
        )  # fmt: skip
        assert len(wanted) <= 63
        assert con["conname"] == wanted, f"{con['tbl']}: constraint {con['conname']} should be {wanted}"
    for name, _type, table, column in snapshot["sequences"]:
        assert name == f"{table}_{column}_seq"
    names = [c["conname"] for c in constraints] + [i[1] for i in snapshot["indexes"]]
    names += [s[0] for s in snapshot["sequences"]]
    stale = [n for n in names if "llm_services" in n or "llm_service_id" in n]
    assert stale == [], f"names still from before 0004: {stale}"
    instance_columns = [c[0] for c in snapshot["columns"]["llm_service_instances"]]
    assert instance_columns[:2] == ["instance_id", "instance_handle"]
    assert {"definition_id", "context_limit", "api_key_encrypted", "api_key"} <= set(instance_columns)


# --- (b) 0004 on a populated pre-refactor database, and back -------------------------------------------------


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ts(day: str) -> datetime:
    return datetime.fromisoformat(day)


async def populate_0003(conn: asyncpg.Connection) -> dict[str, int]:
    """Realistic data as the Go service wrote it; returns the ids of services and projects by handle."""
    await conn.executemany(
        "INSERT INTO users (user_handle, name, email, vdb_api_key, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $5)",
        [
            ("alice", "Alice", "alice@example.org", key_hash("alice-key"), ts("2024-01-01")),
            ("bob", "Bob", "bob@example.org", key_hash("bob-key"), ts("2024-01-02")),
            ("carol", None, "carol@example.org", key_hash("carol-key"), ts("2024-01-03")),
        ],
    )
    # 'openai' exists before 0004 with its own description: 0004 must keep it as it is.
    await conn.executemany(
        "INSERT INTO api_standards (api_standard_handle, description, key_method, key_field, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $5)",
        [
            ("openai", "Alice's OpenAI standard", "auth_bearer", "Authorization", ts("2024-01-01")),
            ("ollama", "Local Ollama, no key", "auth_bearer", None, ts("2024-01-01")),
        ],
    )
    ids: dict[str, int] = {}
    for handle, owner, std, model, dims, api_key, created in [
        # one user (alice) with two services; inserted in this order so oai-large has the lower id
        ("oai-large", "alice", "openai", "text-embedding-3-large", 3072, "sk-alice-large", "2024-01-04"),
        ("local-nomic", "alice", "ollama", "nomic-embed-text", 3, "alice-local-secret", "2024-01-04"),
        ("bob-cohere", "bob", "ollama", "embed-multilingual-v3.0", 3, None, "2024-01-05"),
    ]:
        ids[handle] = await conn.fetchval(
            "INSERT INTO llm_services (llm_service_handle, owner, endpoint, description, api_key, api_standard,"
            " model, dimensions, created_at, updated_at)"
            " VALUES ($1, $2, 'https://llm.example.org/embed', $3, $4, $5, $6, $7, $8, $8)"
            " RETURNING llm_service_id",
            handle, owner, f"{owner}'s {model}", api_key, std, model, dims, ts(created),
        )  # fmt: skip
    await conn.executemany(
        "INSERT INTO users_llm_services (user_handle, llm_service_id, role, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $4)",
        [
            ("alice", ids["oai-large"], "owner", ts("2024-01-04")),
            ("alice", ids["local-nomic"], "owner", ts("2024-01-04")),
            ("bob", ids["bob-cohere"], "owner", ts("2024-01-05")),
            ("bob", ids["local-nomic"], "writer", ts("2024-01-06")),
            ("carol", ids["local-nomic"], "reader", ts("2024-01-07")),
            ("carol", ids["bob-cohere"], "owner", ts("2024-01-08")),  # 'owner' of someone else's service
        ],
    )
    for handle, owner, public_read in [
        ("papers", "alice", False),
        ("empty", "alice", None),
        ("public-poems", "bob", True),
        ("tie", "bob", False),
    ]:
        ids[handle] = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, description, metadata_scheme, public_read,"
            " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING project_id",
            handle, owner, f"{handle} project", '{"type": "object"}' if handle == "papers" else None,
            public_read, ts("2024-01-10"), ts("2024-03-01"),
        )  # fmt: skip
    await conn.executemany(
        "INSERT INTO projects_llm_services (project_id, llm_service_id, created_at, updated_at)"
        " VALUES ($1, $2, $3, $3)",
        [
            # papers: linked to oai-large (lower id) AFTER local-nomic -> the first one is local-nomic
            (ids["papers"], ids["local-nomic"], ts("2024-01-11")),
            (ids["papers"], ids["oai-large"], ts("2024-02-01")),
            (ids["public-poems"], ids["bob-cohere"], ts("2024-01-12")),
            # tie: same created_at -> the lower id, local-nomic
            (ids["tie"], ids["bob-cohere"], ts("2024-01-13")),
            (ids["tie"], ids["local-nomic"], ts("2024-01-13")),
        ],
    )
    await conn.executemany(
        "INSERT INTO users_projects (user_handle, project_id, role, created_at, updated_at)"
        " VALUES ($1, $2, $3, '2024-01-20', '2024-01-20')",
        [
            ("alice", ids["papers"], "owner"),
            ("alice", ids["empty"], "owner"),
            ("bob", ids["public-poems"], "owner"),
            ("bob", ids["tie"], "owner"),
            ("bob", ids["papers"], "writer"),
            ("carol", ids["public-poems"], "reader"),
        ],
    )
    await conn.executemany(
        "INSERT INTO embeddings (text_id, owner, project_id, llm_service_id, text, vector, vector_dim, metadata,"
        " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6::halfvec, $7, $8::jsonb, $9, $9)",
        [
            ("doc1", "alice", ids["papers"], ids["local-nomic"], "First", "[1,2,3]", 3,
             '{"author": "A", "year": 1781}', ts("2024-02-01")),
            ("https://example.org/doc 2%", "alice", ids["papers"], ids["local-nomic"], None, "[0.5,-1.25,3]", 3,
             '{"nested": {"k": [1, 2]}}', ts("2024-02-02")),
            # the same text_id made with the project's second service
            ("doc1", "alice", ids["papers"], ids["oai-large"], None, "[3,2,1]", 3, None, ts("2024-02-03")),
            ("poem", "bob", ids["public-poems"], ids["bob-cohere"], "Roses", "[0.1,0.2,0.3]", 3,
             '{"lang": "en"}', ts("2024-02-04")),
            ("t", "bob", ids["tie"], ids["local-nomic"], None, "[7,8,9]", 3, None, ts("2024-02-05")),
        ],
    )  # fmt: skip
    return ids


SERVICE_COLUMNS = "owner, endpoint, description, api_key, api_standard, model, dimensions, created_at, updated_at"
EMBEDDING_COLUMNS = "text_id, owner, project_id, text, vector::text, vector_dim, metadata, created_at, updated_at"
PROJECT_COLUMNS = "project_handle, owner, description, metadata_scheme, public_read, created_at, updated_at"


async def rows_by_id(conn: asyncpg.Connection, sql: str) -> dict[Any, tuple[Any, ...]]:
    return {r[0]: tuple(r)[1:] for r in await conn.fetch(sql)}


async def test_0004_moves_populated_0003_data_and_its_rollback_moves_it_back(empty_database_factory) -> None:  # type: ignore[no-untyped-def]
    uri = await empty_database_factory()
    assert await apply(uri, up_to=M3) == [M1, M2, M3]
    async with connect(uri) as conn:
        ids = await populate_0003(conn)
        services = await rows_by_id(
            conn, f"SELECT llm_service_id, llm_service_handle, {SERVICE_COLUMNS} FROM llm_services"
        )
        embeddings = await rows_by_id(conn, f"SELECT embeddings_id, {EMBEDDING_COLUMNS} FROM embeddings")
        embedding_service = await rows_by_id(conn, "SELECT embeddings_id, llm_service_id FROM embeddings")
        projects = await rows_by_id(conn, f"SELECT project_id, {PROJECT_COLUMNS} FROM projects")
        users = await _tuples(conn, "SELECT * FROM users ORDER BY user_handle")
        users_projects = await _tuples(conn, "SELECT * FROM users_projects ORDER BY 1, 2")
        standards = await _tuples(conn, "SELECT * FROM api_standards ORDER BY 1")
    schema_0003 = await schema_snapshot(uri)

    assert await apply(uri, up_to=M4) == [M4]
    async with connect(uri) as conn:
        # _system: exists, can never authenticate (no SHA-256 hex digest is 64 dashes).
        system = await conn.fetchrow("SELECT * FROM users WHERE user_handle = '_system'")
        assert (system["name"], system["email"], system["vdb_api_key"]) == (
            "System", "_system@vdb.invalid", "-" * 64,
        )  # fmt: skip
        assert await _tuples(conn, "SELECT * FROM users WHERE user_handle <> '_system' ORDER BY 1") == users

        definitions = await _tuples(
            conn,
            "SELECT definition_handle, endpoint, api_standard, model, dimensions, context_limit, is_public"
            " FROM llm_service_definitions WHERE owner = '_system' ORDER BY 1",
        )
        assert definitions == [
            ("cohere-multilingual-v3", "https://api.cohere.com/v2/embed", "cohere", "embed-multilingual-v3.0",
             1024, 512, True),
            ("cohere-v4", "https://api.cohere.com/v2/embed", "cohere", "embed-v4.0", 1536, 128000, True),
            ("gemini-embedding-001",
             "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:embedContent",
             "gemini", "gemini-embedding-001", 3072, 2048, True),
            ("openai-large", "https://api.openai.com/v1/embeddings", "openai", "text-embedding-3-large",
             3072, 8192, True),
            ("openai-small", "https://api.openai.com/v1/embeddings", "openai", "text-embedding-3-small",
             1536, 8191, True),
        ]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM llm_service_definitions") == 5
        assert await conn.fetchval("SELECT bool_and(description <> '') FROM llm_service_definitions"), (
            "every built-in definition has a description"
        )

        # API standards: the pre-existing openai row untouched, cohere and gemini added.
        std = {r[0]: tuple(r) for r in await conn.fetch("SELECT * FROM api_standards")}
        assert std["openai"] == next(s for s in standards if s[0] == "openai")
        assert std["ollama"] == next(s for s in standards if s[0] == "ollama")
        assert (std["cohere"][2], std["cohere"][3]) == ("auth_bearer", "Authorization")
        assert (std["gemini"][2], std["gemini"][3]) == ("custom_header", "x-goog-api-key")
        assert std["cohere"][1] and std["gemini"][1]
        assert {r[0] for r in await conn.fetch("SELECT vdb_role FROM vdb_roles")} == {
            "owner", "writer", "reader", "editor",
        }  # fmt: skip

        # Services are now instances: same ids, handles and plaintext keys; nothing encrypted yet.
        instances = await rows_by_id(
            conn, f"SELECT instance_id, instance_handle, {SERVICE_COLUMNS} FROM llm_service_instances"
        )
        assert instances == services
        assert await conn.fetchval("SELECT api_key FROM llm_service_instances WHERE instance_handle = 'oai-large'") == (
            "sk-alice-large"
        )
        extra = await rows_by_id(
            conn,
            "SELECT instance_handle, definition_id, context_limit, api_key_encrypted FROM llm_service_instances",
        )
        assert extra == {
            "oai-large": (None, 8192, None),  # a built-in definition's model: its context limit
            "local-nomic": (None, 8192, None),  # unknown model: the default
            "bob-cohere": (None, 512, None),  # embed-multilingual-v3.0
        }

        # Shares: everyone but the owner, with mapped roles.
        shares = set(
            await _tuples(conn, "SELECT user_handle, instance_id, role FROM llm_service_instances_shared_with")
        )
        assert shares == {
            ("bob", ids["local-nomic"], "editor"),
            ("carol", ids["local-nomic"], "reader"),
            ("carol", ids["bob-cohere"], "editor"),
        }
        assert await conn.fetchval(
            "SELECT created_at FROM llm_service_instances_shared_with WHERE user_handle = 'bob'"
        ) == ts("2024-01-06")

        # Projects point at their first service; the rest of each row is unchanged.
        assert await rows_by_id(conn, "SELECT project_id, llm_service_instance_id FROM projects") == {
            ids["papers"]: (ids["local-nomic"],),
            ids["empty"]: (None,),
            ids["public-poems"]: (ids["bob-cohere"],),
            ids["tie"]: (ids["local-nomic"],),
        }
        assert await rows_by_id(conn, f"SELECT project_id, {PROJECT_COLUMNS} FROM projects") == projects
        assert await _tuples(conn, "SELECT * FROM users_projects ORDER BY 1, 2") == users_projects

        # Embeddings: same rows, vectors and metadata; the service column renamed with its values.
        assert await rows_by_id(conn, f"SELECT embeddings_id, {EMBEDDING_COLUMNS} FROM embeddings") == embeddings
        assert (
            await rows_by_id(conn, "SELECT embeddings_id, llm_service_instance_id FROM embeddings") == embedding_service
        )

        gone = await conn.fetchval(
            "SELECT array_remove(ARRAY[to_regclass('llm_services')::text, to_regclass('users_llm_services')::text,"
            " to_regclass('projects_llm_services')::text], NULL)"
        )
        assert gone == []

        # An instance a project is bound to cannot be deleted (ON DELETE RESTRICT: SQLSTATE 23001, not 23503).
        # (Its embeddings are deleted first, in a transaction rolled back afterwards, so only the project blocks.)
        with pytest.raises(asyncpg.RestrictViolationError, match="projects_llm_service_instance_id_fkey"):
            async with conn.transaction():
                await conn.execute("DELETE FROM embeddings WHERE llm_service_instance_id = $1", ids["bob-cohere"])
                await conn.execute("DELETE FROM llm_service_instances WHERE instance_id = $1", ids["bob-cohere"])

        # Changes made under 0004 that its rollback has to map back.
        await conn.execute(
            "UPDATE users_projects SET role = 'editor' WHERE user_handle = 'carol' AND project_id = $1",
            ids["public-poems"],
        )
        new_id = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions,"
            " definition_id, context_limit, api_key_encrypted)"
            " SELECT 'gem', 'bob', endpoint, api_standard, model, dimensions, definition_id, context_limit,"
            " '\\x01deadbeef'::bytea FROM llm_service_definitions WHERE definition_handle = 'gemini-embedding-001'"
            " RETURNING instance_id"
        )

    assert await rollback(uri, down_to=M3) == [M4]
    assert await schema_snapshot(uri) == schema_0003
    async with connect(uri) as conn:
        restored = await rows_by_id(
            conn, f"SELECT llm_service_id, llm_service_handle, {SERVICE_COLUMNS} FROM llm_services"
        )
        assert {k: v for k, v in restored.items() if k != new_id} == services
        # The instance whose key existed only encrypted is back without a key (documented loss).
        assert restored[new_id][:5] == ("gem", "bob", restored[new_id][2], None, None)
        assert restored[new_id][5] == "gemini"

        assert set(await _tuples(conn, "SELECT user_handle, llm_service_id, role FROM users_llm_services")) == {
            ("alice", ids["oai-large"], "owner"),
            ("alice", ids["local-nomic"], "owner"),
            ("bob", ids["bob-cohere"], "owner"),
            ("bob", new_id, "owner"),
            ("bob", ids["local-nomic"], "writer"),
            ("carol", ids["local-nomic"], "reader"),
            ("carol", ids["bob-cohere"], "writer"),
        }
        assert set(await _tuples(conn, "SELECT project_id, llm_service_id FROM projects_llm_services")) == {
            (ids["papers"], ids["local-nomic"]),
            (ids["public-poems"], ids["bob-cohere"]),
            (ids["tie"], ids["local-nomic"]),
        }
        assert await rows_by_id(conn, f"SELECT project_id, {PROJECT_COLUMNS} FROM projects") == projects
        assert await rows_by_id(conn, f"SELECT embeddings_id, {EMBEDDING_COLUMNS} FROM embeddings") == embeddings
        assert await rows_by_id(conn, "SELECT embeddings_id, llm_service_id FROM embeddings") == embedding_service
        assert await _tuples(conn, "SELECT * FROM users ORDER BY user_handle") == users

        expected_up = [
            (u, p, "writer" if (u, p) == ("carol", ids["public-poems"]) else role, *rest)
            for u, p, role, *rest in users_projects
        ]
        assert await _tuples(conn, "SELECT * FROM users_projects ORDER BY 1, 2") == expected_up
        assert {r[0] for r in await conn.fetch("SELECT vdb_role FROM vdb_roles")} == {"owner", "writer", "reader"}
        # openai and ollama existed before; gemini is in use by 'gem'; cohere was 0004's and unused.
        assert [r[0] for r in await conn.fetch("SELECT api_standard_handle FROM api_standards ORDER BY 1")] == [
            "gemini", "ollama", "openai",
        ]  # fmt: skip
        assert await _tuples(conn, "SELECT * FROM api_standards WHERE api_standard_handle <> 'gemini' ORDER BY 1") == (
            standards
        )

    # The rolled-back database is a valid 0003 database: 0004 applies to it again.
    assert await apply(uri, up_to=M4) == [M4]
    async with connect(uri) as conn:
        assert (
            await conn.fetchval("SELECT llm_service_instance_id FROM projects WHERE project_id = $1", ids["tie"])
            == (ids["local-nomic"])
        )


async def test_0004_refuses_to_hand_system_definitions_to_an_existing_system_user(empty_database_factory) -> None:  # type: ignore[no-untyped-def]
    uri = await empty_database_factory()
    await apply(uri, up_to=M3)
    async with connect(uri) as conn:
        await conn.execute(
            "INSERT INTO users (user_handle, email, vdb_api_key) VALUES ('_system', 'x@example.org', $1)",
            key_hash("a real key"),
        )
    with pytest.raises(psycopg.errors.UniqueViolation, match="users_pkey"):  # yoyo runs on psycopg
        await apply(uri, up_to=M4)
    async with connect(uri) as conn:  # and it left nothing half-done
        assert await conn.fetchval("SELECT to_regclass('llm_services')::text") == "llm_services"
        assert await conn.fetchval("SELECT to_regclass('llm_service_definitions')") is None


# --- 0002's indexes work ------------------------------------------------------------------------------------


async def _hnsw_fixture_rows(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO users (user_handle, email, vdb_api_key) VALUES ('u', 'u@example.org', $1)", key_hash("u")
    )
    await conn.execute(
        "INSERT INTO api_standards (api_standard_handle, key_method) VALUES ('s', 'auth_bearer');"
        "INSERT INTO llm_services (llm_service_handle, owner, endpoint, api_standard, model, dimensions)"
        " VALUES ('m', 'u', 'https://x', 's', 'm', 384);"
        "INSERT INTO projects (project_handle, owner) VALUES ('p', 'u');"
    )


def _nearest_query(dim: int, filter_dim: int) -> str:
    return (
        f"SELECT text_id FROM embeddings WHERE vector_dim = {filter_dim}"
        f" ORDER BY vector::halfvec({dim}) <=> $1::halfvec({dim}) LIMIT 5"
    )


def _vector_text(dim: int) -> str:
    return "[" + ",".join(["0.5"] * dim) + "]"


async def test_hnsw_index_is_chosen_for_its_dimension(empty_database_factory) -> None:  # type: ignore[no-untyped-def]
    uri = await empty_database_factory()
    await apply(uri, up_to=M2)
    async with connect(uri) as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for dim in (384, 768, 1024, 1536, 3072):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _nearest_query(dim, dim), _vector_text(dim)))
            assert f"Index Scan using embeddings_vector_{dim} " in plan, plan
        # The partial index only serves queries on its own dimension.
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _nearest_query(384, 768), _vector_text(384)))
        assert "embeddings_vector_384" not in plan, plan


async def test_hnsw_index_serves_a_nearest_neighbour_query(empty_database_factory) -> None:  # type: ignore[no-untyped-def]
    uri = await empty_database_factory()
    await apply(uri, up_to=M2)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((300, 384)).astype(np.float16)
    as_text = ["[" + ",".join(str(float(x)) for x in v) + "]" for v in vectors]
    async with connect(uri) as conn:
        await _hnsw_fixture_rows(conn)
        await conn.executemany(
            "INSERT INTO embeddings (text_id, owner, project_id, llm_service_id, vector, vector_dim)"
            " VALUES ($1, 'u', 1, 1, $2::halfvec, 384)",
            [(f"t{i}", v) for i, v in enumerate(as_text)],
        )
        # A vector of another size is stored too; it is in no index and never compared.
        await conn.execute(
            "INSERT INTO embeddings (text_id, owner, project_id, llm_service_id, vector, vector_dim)"
            " VALUES ('other', 'u', 1, 1, '[1,2,3]', 3)"
        )
        query = _nearest_query(384, 384)
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query, as_text[42]))
            assert "Index Scan using embeddings_vector_384 " in plan, plan
            nearest = [r[0] for r in await conn.fetch(query, as_text[42])]
    assert nearest[0] == "t42"
    assert len(nearest) == 5 and "other" not in nearest


# --- (c) the yoyo CLI, as deploys run it -------------------------------------------------------------------


async def test_yoyo_cli_applies_all_then_nothing(empty_database_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = await empty_database_factory()
    # e.g. postgresql+psycopg://postgres:@/vdbt_1_2?host=/tmp/vdb-test-ab12cd34 (socket dir as a query parameter)
    database = yoyo_url(uri)
    assert database.startswith("postgresql+psycopg://")
    yoyo = Path(sys.executable).parent / "yoyo"

    async def run_yoyo() -> None:
        proc = await asyncio.create_subprocess_exec(
            str(yoyo), "apply", "--batch", "--no-config-file", "--database", database, str(MIGRATIONS),
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, (out + err).decode()

    async def applied() -> tuple[list[str], int]:
        async with connect(uri) as conn:
            ids = [r[0] for r in await conn.fetch("SELECT migration_id FROM _yoyo_migration ORDER BY 1")]
            return ids, await conn.fetchval("SELECT count(*) FROM _yoyo_log")

    await run_yoyo()
    ids, log_entries = await applied()
    assert ids == MIGRATION_IDS
    assert set((await schema_snapshot(uri))["tables"]) >= TABLES_0004 - {"users_projects"}

    await run_yoyo()
    assert await applied() == (ids, log_entries), "the second run applied something"


async def test_unknown_migration_ids_are_refused(db_uri):
    with pytest.raises(ValueError, match="not a pending migration"):
        await apply(db_uri, up_to="0003.project-public-raed")
    with pytest.raises(ValueError, match="not an applied migration"):
        await rollback(db_uri, down_to="0003.project-public-raed")


async def test_adopt_go_database_with_yoyo_mark_then_apply(empty_database_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The adoption procedure of docs/adopting-dhamps-vdb.md: a Go-service database (schema 0001–0003, no yoyo tables) is marked, then
    migrated, keeping its rows."""
    uri = await empty_database_factory()
    await apply(uri, up_to=M3)
    async with connect(uri) as conn:  # make it look like the Go service made it: no yoyo bookkeeping
        await conn.execute("DROP TABLE _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock")
        await conn.execute(
            "INSERT INTO users (user_handle, name, email, vdb_api_key) VALUES ('gouser', 'G', 'g@example.org', $1)",
            "a" * 64,
        )
    yoyo = Path(sys.executable).parent / "yoyo"
    database = yoyo_url(uri)
    for args in (("mark", "-r", M3), ("apply",)):
        proc = await asyncio.create_subprocess_exec(
            str(yoyo), *args[:1], "--batch", "--no-config-file", "--database", database, *args[1:], str(MIGRATIONS),
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, (out + err).decode()
    async with connect(uri) as conn:
        ids = [r[0] for r in await conn.fetch("SELECT migration_id FROM _yoyo_migration ORDER BY 1")]
        assert ids == MIGRATION_IDS
        assert await conn.fetchval("SELECT email FROM users WHERE user_handle = 'gouser'") == "g@example.org"
        assert await conn.fetchval("SELECT count(*) FROM llm_service_definitions WHERE owner = '_system'") == 5
