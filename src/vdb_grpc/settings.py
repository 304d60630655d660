"""Service settings, read once from the environment into a frozen dataclass.

Every variable is listed in ``template.env`` with a comment. Invalid or missing settings are collected and
reported together (``SettingsError`` lists every problem), so an operator fixes them in one go.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
#: Values shipped in template.env; refusing them keeps copy-pasted examples out of production.
PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-string-of-32-or-more-characters",
        "change-me-admin-key-of-at-least-32-characters",
    }
)
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(Exception):
    """The environment does not describe a runnable service; ``problems`` lists every issue found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one server process."""

    database_url: str | None = None
    """``VDB_DATABASE_URL``: libpq URL of an external PostgreSQL with pgvector. None → embedded mode."""
    data_dir: Path = Path("vdb-data")
    """``VDB_DATA_DIR``: embedded mode's PostgreSQL cluster and generated secrets."""
    listen: str = "127.0.0.1:50051"
    """``VDB_LISTEN``: host:port for gRPC (port 0 picks a free port)."""
    admin_key: str | None = field(default=None, repr=False)
    """``VDB_ADMIN_KEY``: the admin bearer key (≥ 32 chars). Generated in embedded mode when unset."""
    encryption_key: str | None = field(default=None, repr=False)
    """``ENCRYPTION_KEY``: protects stored provider API keys (≥ 32 chars). Generated in embedded mode."""
    encryption_key_previous: tuple[str, ...] = field(default=(), repr=False)
    """``ENCRYPTION_KEY_PREVIOUS``: comma-separated older keys still accepted for decryption."""
    max_message_bytes: int = 64 * MIB
    """``VDB_MAX_MESSAGE_BYTES``: largest gRPC request/response."""
    max_batch_items: int = 5000
    """``VDB_MAX_BATCH_ITEMS``: most embeddings in one upload request or stream message."""
    log_level: str = "info"
    """``VDB_LOG_LEVEL``: debug, info, warning or error."""
    pool_min_size: int = 2
    """``VDB_POOL_MIN_SIZE``: database connections kept open."""
    pool_max_size: int = 10
    """``VDB_POOL_MAX_SIZE``: most database connections."""
    statement_timeout_ms: int = 30_000
    """``VDB_STATEMENT_TIMEOUT_MS``: per-statement limit in PostgreSQL (0 = none)."""
    shutdown_grace_seconds: float = 10.0
    """``VDB_SHUTDOWN_GRACE_SECONDS``: how long in-flight RPCs may finish after SIGTERM/SIGINT."""
    auth_cache_seconds: float = 2.0
    """``VDB_AUTH_CACHE_SECONDS``: how long a resolved API key and a search permission check are reused
    (0 = never). Changes made through any server apply at once (other replicas hear of them through NOTIFY);
    this bounds the staleness when that message is lost or a change bypasses the service."""
    hnsw_ef_search: int = 150
    """``VDB_HNSW_EF_SEARCH``: HNSW candidate list per search (raised to offset + limit when larger); higher
    means better recall and slower searches. 150: recall@10 on held-out queries 0.998-0.999 at 100k x 384 where
    40 gave 0.937 and 100 0.990 (docs/search.md)."""
    tls_cert_file: Path | None = None
    """``VDB_TLS_CERT_FILE``: PEM certificate chain; with VDB_TLS_KEY_FILE enables TLS."""
    tls_key_file: Path | None = None
    """``VDB_TLS_KEY_FILE``: PEM private key for VDB_TLS_CERT_FILE."""
    index_seal_min_rows: int = 2000
    """``VDB_INDEX_SEAL_MIN_ROWS``: a backlog of unindexed rows of one dimension at least this large gets a new
    index segment built in bulk beside the live indexes; smaller backlogs are inserted into the newest one."""
    index_seal_max_rows: int = 250_000
    """``VDB_INDEX_SEAL_MAX_ROWS``: most rows in one new segment (bounds one build's duration: vacuum of the
    table waits for a running build)."""
    index_max_segments: int = 4
    """``VDB_INDEX_MAX_SEGMENTS``: a dimension with more HNSW index segments than this gets two merged in the
    background (each search reads every segment of its dimension)."""
    index_build_memory_mb: int = 0
    """``VDB_INDEX_BUILD_MEMORY_MB``: most memory one HNSW build may use (its maintenance_work_mem is sized to
    the graph within this); 0 = a quarter of this machine's memory."""
    index_build_workers: int = -1
    """``VDB_INDEX_BUILD_WORKERS``: most parallel maintenance workers per build; -1 = CPUs - 1 (at most 4)."""

    @property
    def embedded(self) -> bool:
        """True when the service runs its own PostgreSQL from ``data_dir``."""
        return self.database_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings; raise ``SettingsError`` listing every problem."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else None

        def integer(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be an integer, got {raw!r}")
                return default
            if value < minimum or (maximum is not None and value > maximum):
                bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
                problems.append(f"{name} must be {bound}, got {value}")
            return value

        def secret(name: str) -> str | None:
            value = env.get(name)
            if value is None or value == "":
                return None
            if len(value) < 32:
                problems.append(f"{name} must be at least 32 characters long")
            elif value in PLACEHOLDER_SECRETS:
                problems.append(f"{name} is the example value from template.env; generate a real secret")
            return value

        database_url = get("VDB_DATABASE_URL")
        if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
            problems.append("VDB_DATABASE_URL must start with postgresql:// (a libpq URL)")

        listen = get("VDB_LISTEN") or cls.listen
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            problems.append(f"VDB_LISTEN must be host:port, got {listen!r}")

        admin_key = secret("VDB_ADMIN_KEY")
        if database_url is not None and admin_key is None and "VDB_ADMIN_KEY must" not in " ".join(problems):
            problems.append("VDB_ADMIN_KEY is required when VDB_DATABASE_URL is set (at least 32 characters)")

        encryption_key = secret("ENCRYPTION_KEY")
        previous_raw = env.get("ENCRYPTION_KEY_PREVIOUS", "")
        previous = tuple(p.strip() for p in previous_raw.split(",") if p.strip())
        for i, key in enumerate(previous, 1):
            if len(key) < 32:
                problems.append(f"ENCRYPTION_KEY_PREVIOUS entry {i} must be at least 32 characters long")
        # In embedded mode the current key may come from the data dir, so only external mode needs it here.
        if (
            previous
            and encryption_key is None
            and database_url is not None
            and "ENCRYPTION_KEY must" not in " ".join(problems)
        ):
            problems.append("ENCRYPTION_KEY_PREVIOUS is set but ENCRYPTION_KEY is not")

        log_level = (get("VDB_LOG_LEVEL") or "info").lower()
        if log_level not in LOG_LEVELS:
            problems.append(f"VDB_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")

        max_message_bytes = integer("VDB_MAX_MESSAGE_BYTES", cls.max_message_bytes, 1 * MIB, 2**31 - 1)
        max_batch_items = integer("VDB_MAX_BATCH_ITEMS", cls.max_batch_items, 1, 1_000_000)
        pool_min = integer("VDB_POOL_MIN_SIZE", cls.pool_min_size, 0, 1000)
        pool_max = integer("VDB_POOL_MAX_SIZE", cls.pool_max_size, 1, 1000)
        if pool_min > pool_max:
            problems.append(f"VDB_POOL_MIN_SIZE ({pool_min}) must not exceed VDB_POOL_MAX_SIZE ({pool_max})")
        statement_timeout = integer("VDB_STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms, 0)

        grace_raw = get("VDB_SHUTDOWN_GRACE_SECONDS")
        grace = cls.shutdown_grace_seconds
        if grace_raw is not None:
            try:
                grace = float(grace_raw)
                if grace < 0:
                    raise ValueError
            except ValueError:
                problems.append(f"VDB_SHUTDOWN_GRACE_SECONDS must be a non-negative number, got {grace_raw!r}")

        cache_raw = get("VDB_AUTH_CACHE_SECONDS")
        auth_cache = cls.auth_cache_seconds
        if cache_raw is not None:
            try:
                auth_cache = float(cache_raw)
                if not 0 <= auth_cache <= 60:
                    raise ValueError
            except ValueError:
                problems.append(f"VDB_AUTH_CACHE_SECONDS must be a number of seconds from 0 to 60, got {cache_raw!r}")

        ef_search = integer("VDB_HNSW_EF_SEARCH", cls.hnsw_ef_search, 1, 1000)

        tls_cert, tls_key = get("VDB_TLS_CERT_FILE"), get("VDB_TLS_KEY_FILE")
        if (tls_cert is None) != (tls_key is None):
            problems.append("VDB_TLS_CERT_FILE and VDB_TLS_KEY_FILE must be set together")
        for name, path in (("VDB_TLS_CERT_FILE", tls_cert), ("VDB_TLS_KEY_FILE", tls_key)):
            if path is not None and not Path(path).is_file():
                problems.append(f"{name}: file not found: {path}")

        seal_min = integer("VDB_INDEX_SEAL_MIN_ROWS", cls.index_seal_min_rows, 1, 10_000_000)
        seal_max = integer("VDB_INDEX_SEAL_MAX_ROWS", cls.index_seal_max_rows, 1, 100_000_000)
        if seal_min > seal_max:
            problems.append(
                f"VDB_INDEX_SEAL_MIN_ROWS ({seal_min}) must not exceed VDB_INDEX_SEAL_MAX_ROWS ({seal_max})"
            )
        max_segments = integer("VDB_INDEX_MAX_SEGMENTS", cls.index_max_segments, 1, 64)
        build_memory = integer("VDB_INDEX_BUILD_MEMORY_MB", cls.index_build_memory_mb, 0, 1_000_000)
        build_workers = integer("VDB_INDEX_BUILD_WORKERS", cls.index_build_workers, -1, 64)

        if problems:
            raise SettingsError(problems)
        return cls(
            database_url=database_url,
            data_dir=Path(get("VDB_DATA_DIR") or "vdb-data"),
            listen=listen,
            admin_key=admin_key,
            encryption_key=encryption_key,
            encryption_key_previous=previous,
            max_message_bytes=max_message_bytes,
            max_batch_items=max_batch_items,
            log_level=log_level,
            pool_min_size=pool_min,
            pool_max_size=pool_max,
            statement_timeout_ms=statement_timeout,
            shutdown_grace_seconds=grace,
            auth_cache_seconds=auth_cache,
            hnsw_ef_search=ef_search,
            tls_cert_file=Path(tls_cert) if tls_cert else None,
            tls_key_file=Path(tls_key) if tls_key else None,
            index_seal_min_rows=seal_min,
            index_seal_max_rows=seal_max,
            index_max_segments=max_segments,
            index_build_memory_mb=build_memory,
            index_build_workers=build_workers,
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (used to fill in embedded-mode secrets and test overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
