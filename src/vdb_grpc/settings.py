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
    hnsw_ef_search: int = 40
    """``VDB_HNSW_EF_SEARCH``: HNSW candidate list per search (raised to offset + limit when larger); higher
    means better recall and slower searches."""
    tls_cert_file: Path | None = None
    """``VDB_TLS_CERT_FILE``: PEM certificate chain; with VDB_TLS_KEY_FILE enables TLS."""
    tls_key_file: Path | None = None
    """``VDB_TLS_KEY_FILE``: PEM private key for VDB_TLS_CERT_FILE."""
    shutdown_drain_seconds: float = 0.0
    """``VDB_SHUTDOWN_DRAIN_SECONDS``: after SIGTERM, how long the server reports NOT_SERVING but keeps accepting
    calls (so a load balancer moves traffic away) before it stops accepting and finishes in-flight calls within
    VDB_SHUTDOWN_GRACE_SECONDS. SIGINT skips it."""
    allow_reset: bool = False
    """``VDB_ALLOW_RESET``: true lets the admin call AdminService/ResetDatabase (which deletes every user's data);
    otherwise it is refused with FAILED_PRECONDITION."""
    health_probe_seconds: float = 1.0
    """``VDB_HEALTH_PROBE_SECONDS``: period of the database probe (``SELECT 1``) behind the gRPC health status."""
    db_connect_timeout_seconds: float = 5.0
    """``VDB_DB_CONNECT_TIMEOUT_SECONDS``: longest wait for a new database connection (then UNAVAILABLE)."""
    pool_acquire_timeout_seconds: float = 10.0
    """``VDB_POOL_ACQUIRE_TIMEOUT_SECONDS``: longest wait of a call for a pooled connection, connecting included
    (then UNAVAILABLE)."""
    embedded_restart_backoff_seconds: float = 5.0
    """``VDB_EMBEDDED_RESTART_BACKOFF_SECONDS``: embedded mode restarts a PostgreSQL that died, retrying after
    0.25 s, then twice as long each time, up to this many seconds between attempts."""

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

        def number(name: str, default: float, minimum: float, maximum: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name} must be a number of seconds, got {raw!r}")
                return default
            if not minimum <= value <= maximum:
                problems.append(f"{name} must be between {minimum:g} and {maximum:g} seconds, got {raw}")
            return value

        drain = number("VDB_SHUTDOWN_DRAIN_SECONDS", cls.shutdown_drain_seconds, 0, 3600)
        allow_reset_raw = (get("VDB_ALLOW_RESET") or "false").lower()
        if allow_reset_raw not in ("true", "false"):
            problems.append(f"VDB_ALLOW_RESET must be true or false, got {allow_reset_raw!r}")
        probe = number("VDB_HEALTH_PROBE_SECONDS", cls.health_probe_seconds, 0.05, 60)
        connect_timeout = number("VDB_DB_CONNECT_TIMEOUT_SECONDS", cls.db_connect_timeout_seconds, 0.1, 300)
        acquire_timeout = number("VDB_POOL_ACQUIRE_TIMEOUT_SECONDS", cls.pool_acquire_timeout_seconds, 0.1, 300)
        restart_backoff = number(
            "VDB_EMBEDDED_RESTART_BACKOFF_SECONDS", cls.embedded_restart_backoff_seconds, 0.25, 300
        )

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
            shutdown_drain_seconds=drain,
            allow_reset=allow_reset_raw == "true",
            health_probe_seconds=probe,
            db_connect_timeout_seconds=connect_timeout,
            pool_acquire_timeout_seconds=acquire_timeout,
            embedded_restart_backoff_seconds=restart_backoff,
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (used to fill in embedded-mode secrets and test overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
