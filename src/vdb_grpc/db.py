"""Database access: the asyncpg pool, the pgvector codec, and classification of driver errors.

Query functions live in ``vdb_grpc.queries``; this module only builds connections and knows which asyncpg
exceptions mean "the database is unavailable" (UNAVAILABLE for the client) rather than a bug.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.errors import Unavailable
from vdb_grpc.settings import Settings

log = logging.getLogger(__name__)

_HALFVEC_HEADER = struct.Struct(">HH")

#: Exceptions meaning the database could not be reached or the connection broke.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


#: Iterative scan budget (rows visited) before an HNSW index scan gives up; a search raises it for large k.
HNSW_MAX_SCAN_TUPLES = 40_000
#: Lists an interim IVFFlat index has at most (``queries.indexer.interim_lists``) and lists a scan of one probes:
#: a tenth of a segment's rows, recall@10 0.948-0.999 on held-out queries at 100k x 384 (bench/interim.py).
IVFFLAT_PROBES = 10


def hnsw_session_settings(ef_search: int) -> dict[str, str]:
    """Session defaults of pgvector's HNSW scan for every pooled connection, so a typical search (offset +
    limit <= ef_search) needs no SET round trip: iterative scans (relaxed order; the statement re-sorts the
    merged top-k), the candidate list size and the iterative scan budget; and of the interim IVFFlat indexes'
    scan: lists probed, iterative (a filter that leaves too few rows probes further lists)."""
    return {
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.ef_search": str(int(ef_search)),
        "hnsw.max_scan_tuples": str(HNSW_MAX_SCAN_TUPLES),
        "ivfflat.probes": str(IVFFLAT_PROBES),
        "ivfflat.iterative_scan": "relaxed_order",
    }


def encode_halfvec(value: Any) -> bytes:
    """Binary wire format of pgvector's ``halfvec``: dim, unused, then big-endian float16 values.

    ``bytes`` are taken as already in that format (``halfvec_wire``): asyncpg cannot pass numpy rows inside a
    ``halfvec[]`` parameter (it iterates them as nested arrays), so batch uploads encode vectors beforehand.
    """
    if isinstance(value, bytes):
        return value
    arr = np.asarray(value, dtype=">f2")
    if arr.ndim != 1:
        raise ValueError("halfvec must be one-dimensional")
    return _HALFVEC_HEADER.pack(arr.shape[0], 0) + arr.tobytes()


def halfvec_wire(matrix: np.ndarray[Any, Any]) -> list[bytes]:
    """The ``halfvec`` wire format of each row of a 2-D array, converted to float16 in one vectorized step."""
    header = _HALFVEC_HEADER.pack(matrix.shape[1], 0)
    return [header + row.tobytes() for row in np.asarray(matrix, dtype=">f2")]


def decode_halfvec(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``halfvec`` binary → float32 numpy array (values are float16-rounded)."""
    dim, _ = _HALFVEC_HEADER.unpack_from(data)
    return np.frombuffer(data, dtype=">f2", count=dim, offset=4).astype(np.float32)


#: Server pids of connections that changed session state (``SET``, a session advisory lock) since they were
#: last reset. Only those pay for asyncpg's full reset (``RESET ALL``, unlock all, ...) when they return to the
#: pool; every other release costs no round trip. A pid reused by a new backend only causes a spare reset.
_SESSION_STATE: set[int] = set()


def mark_session_state(conn: asyncpg.Connection) -> None:
    """Record that ``conn`` changed session state: the pool resets it fully when it is released.

    Every session-level ``SET``, advisory lock, ``LISTEN`` or cursor outside a transaction must call this.
    """
    _SESSION_STATE.add(conn.get_server_pid())


async def reset_connection(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: asyncpg has already rolled back any open transaction; run the full reset
    query only for connections marked by ``mark_session_state``."""
    pid = conn.get_server_pid()
    if pid in _SESSION_STATE:
        _SESSION_STATE.discard(pid)
        await conn.execute(conn.get_reset_query())


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: binary codecs for halfvec and jsonb."""
    await conn.set_type_codec(
        "halfvec", schema="public", encoder=encode_halfvec, decoder=decode_halfvec, format="binary"
    )


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    """Open the pool (after migrations, so the ``halfvec`` type exists).

    Raises:
        Unavailable: the database cannot be reached.
    """
    server_settings = {"application_name": "vdb-grpc", **hnsw_session_settings(settings.hnsw_ef_search)}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    # BoundedPool / DeadlineConnection (vdb_grpc.runtime.deadline): bounded waits for a connection, and every
    # statement bounded by the calling RPC's deadline (cancelled in PostgreSQL when it passes).
    from vdb_grpc.runtime.deadline import BoundedPool, DeadlineConnection

    pool = BoundedPool(
        dsn,
        acquire_timeout=settings.pool_acquire_timeout_seconds,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        connect=None,
        setup=None,
        init=init_connection,
        reset=reset_connection,
        loop=None,
        connection_class=DeadlineConnection,
        record_class=asyncpg.Record,
        server_settings=server_settings,
        command_timeout=None,
        timeout=settings.db_connect_timeout_seconds,
    )
    try:
        await pool
    except TimeoutError as exc:
        raise Unavailable("cannot connect to the database: TimeoutError") from exc
    except UNAVAILABLE_ERRORS as exc:
        raise Unavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
    return pool


async def check_database(dsn: str) -> None:
    """Fail early, with an operator-friendly message, when the database cannot hold our schema.

    Creates the ``vector`` extension when it is missing and the role may create it.

    Raises:
        RuntimeError: unreachable database, or pgvector missing / not creatable.
    """
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout=15)
    except (TimeoutError, *UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
        raise RuntimeError(f"cannot connect to the database: {type(exc).__name__}: {exc}") from exc
    try:
        installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        if installed is None:
            available = await conn.fetchval("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            if available is None:
                raise RuntimeError(
                    "the PostgreSQL server has no pgvector extension; install pgvector >= 0.7 on the server "
                    "(https://github.com/pgvector/pgvector#installation)"
                )
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except asyncpg.PostgresError as exc:
                raise RuntimeError(
                    "the extension 'vector' is not installed in this database and this role may not create it "
                    f"({exc.sqlstate}): run CREATE EXTENSION vector; as a superuser"
                ) from exc
            installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        major, minor = (int(x) for x in str(installed).split(".")[:2])
        if (major, minor) < (0, 7):
            raise RuntimeError(f"pgvector {installed} is too old; vdb-grpc needs >= 0.7 (halfvec)")
        log.info("database ok: pgvector %s", installed)
    finally:
        await conn.close()
