"""Service settings, read once from the environment into a frozen dataclass.

Every variable is listed in ``template.env`` with a comment. Invalid or missing settings are collected and
reported together (``SettingsError`` lists every problem), so an operator fixes them in one go.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vdb_grpc.limits import Limits

MIB = 1024 * 1024
#: Values shipped in template.env; refusing them keeps copy-pasted examples out of production.
PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-string-of-32-or-more-characters",
        "change-me-admin-key-of-at-least-32-characters",
    }
)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
ACCESS_LOG_MODES = ("all", "errors", "off")


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
    metrics_listen: str | None = None
    """``VDB_METRICS_LISTEN``: host:port of the Prometheus endpoint (``/metrics``); None (unset) = no endpoint."""
    log_format: str = "text"
    """``VDB_LOG_FORMAT``: "text" (one readable line per record) or "json" (one JSON object per line)."""
    access_log: str = "errors"
    """``VDB_ACCESS_LOG``: access records for "all" calls (at INFO), only "errors" (refused or failed calls;
    successful ones at DEBUG), or "off"."""
    rate_limit_rps: float = 0.0
    """``VDB_RATE_LIMIT_RPS``: calls per second each user (anonymous callers: each peer address) may make on
    average; 0 (unset) = no limit. The admin key is not limited."""
    rate_limit_burst: int = 0
    """``VDB_RATE_LIMIT_BURST``: calls a caller may make at once after being idle; 0 (unset) = one second's worth
    (VDB_RATE_LIMIT_RPS rounded up)."""
    database_read_url: str | None = None
    """``VDB_DATABASE_READ_URL``: libpq URL of a streaming replica of VDB_DATABASE_URL that serves Get, List and
    Search calls (falling back to the primary while it is unreachable); None = everything on the primary."""
    provider_allow: tuple[str, ...] = ()
    """``VDB_PROVIDER_ALLOW``: comma-separated hosts and IP addresses/CIDRs an instance's endpoint may reach although
    they are not public (loopback, private, link-local …), e.g. ``127.0.0.1,ollama.internal``. Public addresses are
    always allowed; everything else is refused."""
    provider_concurrency: int = 4
    """``VDB_PROVIDER_CONCURRENCY``: most concurrent requests to one instance's provider (per server)."""
    provider_timeout_seconds: float = 30.0
    """``VDB_PROVIDER_TIMEOUT_SECONDS``: longest wait for one provider request (never past the caller's deadline)."""
    provider_retries: int = 3
    """``VDB_PROVIDER_RETRIES``: retries of a provider request after 429, 5xx or a connection error."""
    query_cache_size: int = 1000
    """``VDB_QUERY_CACHE_SIZE``: query texts of text searches whose vectors are kept (0 = none)."""
    query_cache_seconds: float = 60.0
    """``VDB_QUERY_CACHE_SECONDS``: how long a query text's vector is reused."""
    slow_search_ms: int = 1000
    """``VDB_SLOW_SEARCH_MS``: a similarity search slower than this is logged at WARNING with its plan (index arms,
    exact arms) and where the time went (choosing the plan, the statement); 0 = never."""
    max_metadata_bytes: int = 64 * 1024
    """``VDB_MAX_METADATA_BYTES``: largest metadata of one embedding, as compact UTF-8 JSON."""
    max_metadata_depth: int = 16
    """``VDB_MAX_METADATA_DEPTH``: deepest nesting of objects/arrays in one metadata value or search condition
    value (``{"a": 1}`` has depth 1; protobuf decodes at most ~31 Struct levels anyway)."""
    max_schema_bytes: int = 64 * 1024
    """``VDB_MAX_SCHEMA_BYTES``: largest metadata_schema text (UTF-8)."""
    max_schema_depth: int = 32
    """``VDB_MAX_SCHEMA_DEPTH``: deepest nesting of objects/arrays in a metadata_schema."""
    max_schema_subschemas: int = 10_000
    """``VDB_MAX_SCHEMA_SUBSCHEMAS``: most subschemas a metadata_schema may amount to with every ``$ref``
    expanded (recursive ones unrolled VDB_MAX_METADATA_DEPTH times); bounds the cost of validating one value."""
    max_text_chars: int = 1_000_000
    """``VDB_MAX_TEXT_CHARS``: longest ``text`` of one embedding, in characters."""
    max_page_token_chars: int = 1024
    """``VDB_MAX_PAGE_TOKEN_CHARS``: longest ``page_token`` accepted (the tokens the service hands out are far
    shorter)."""
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
    index_seal_min_rows: int = 2000
    """``VDB_INDEX_SEAL_MIN_ROWS``: a backlog of unindexed rows of one dimension at least this large gets a new
    index segment built in bulk beside the live indexes; smaller backlogs are inserted into an existing one
    (their project's, else the newest)."""
    index_seal_max_rows: int = 250_000
    """``VDB_INDEX_SEAL_MAX_ROWS``: most rows in one new segment (bounds one build's duration: vacuum of the
    table waits for a running build)."""
    index_max_segments: int = 2
    """``VDB_INDEX_MAX_SEGMENTS``: a project searched through more HNSW index segments than this gets two of
    them merged in the background (each search reads every segment where its project has many rows); segments
    of different projects are not merged into one graph until a dimension has 4x this many
    (``indexing.merge_policy``)."""
    index_interim_min_rows: int = 20_000
    """``VDB_INDEX_INTERIM_MIN_ROWS``: a new index segment at least this large first gets an interim IVFFlat
    index (seconds to build), which serves its searches until the HNSW index is valid (a tenth of the segment
    read instead of all of it; recall@10 0.95-0.999 meanwhile); counted at 384 dimensions (a segment of N > 384
    dimensions at this x 384 / N rows: ``queries.indexer.interim_rows_for``); 0 = never."""
    index_build_memory_mb: int = 0
    """``VDB_INDEX_BUILD_MEMORY_MB``: most memory one HNSW build may use (its maintenance_work_mem is sized to
    the graph within this); 0 = a quarter of this machine's memory."""
    index_build_workers: int = -1
    """``VDB_INDEX_BUILD_WORKERS``: most parallel maintenance workers per build; -1 = CPUs - 1 (at most 4)."""
    index_build_nice: int = 10
    """``VDB_INDEX_BUILD_NICE``: Unix nice value (0-19) of the embedded PostgreSQL's backends while they seal
    and build index segments (and of their parallel workers), so searches and uploads get the CPU first; 0 =
    same priority. Ignored with ``VDB_DATABASE_URL`` (those backends are not this machine's processes)."""

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

        metrics_listen = get("VDB_METRICS_LISTEN")
        if metrics_listen is not None:
            m_host, m_sep, m_port = metrics_listen.rpartition(":")
            if not m_sep or not m_host or not m_port.isdigit() or int(m_port) > 65535:
                problems.append(f"VDB_METRICS_LISTEN must be host:port, got {metrics_listen!r}")

        log_format = (get("VDB_LOG_FORMAT") or cls.log_format).lower()
        if log_format not in LOG_FORMATS:
            problems.append(f"VDB_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
        access_log = (get("VDB_ACCESS_LOG") or cls.access_log).lower()
        if access_log not in ACCESS_LOG_MODES:
            problems.append(f"VDB_ACCESS_LOG must be one of {', '.join(ACCESS_LOG_MODES)}, got {access_log!r}")

        rps_raw = get("VDB_RATE_LIMIT_RPS")
        rate_limit_rps = cls.rate_limit_rps
        if rps_raw is not None:
            try:
                rate_limit_rps = float(rps_raw)
                if not 0 <= rate_limit_rps <= 1_000_000:
                    raise ValueError
            except ValueError:
                problems.append(f"VDB_RATE_LIMIT_RPS must be a number from 0 to 1000000, got {rps_raw!r}")
                rate_limit_rps = 0.0
        rate_limit_burst = integer("VDB_RATE_LIMIT_BURST", cls.rate_limit_burst, 0, 1_000_000)
        if rate_limit_burst and not rate_limit_rps:
            problems.append("VDB_RATE_LIMIT_BURST is set but VDB_RATE_LIMIT_RPS is not (or is 0)")

        database_read_url = get("VDB_DATABASE_READ_URL")
        if database_read_url is not None:
            if not database_read_url.startswith(("postgresql://", "postgres://")):
                problems.append("VDB_DATABASE_READ_URL must start with postgresql:// (a libpq URL)")
            if database_url is None:
                problems.append("VDB_DATABASE_READ_URL needs VDB_DATABASE_URL (a replica of an external primary)")
        provider_allow = tuple(p.strip() for p in env.get("VDB_PROVIDER_ALLOW", "").split(",") if p.strip())
        for entry in provider_allow:
            if not _allow_entry_ok(entry):
                problems.append(f"VDB_PROVIDER_ALLOW: {entry!r} is neither a host name nor an IP address or CIDR")
        provider_concurrency = integer("VDB_PROVIDER_CONCURRENCY", cls.provider_concurrency, 1, 1000)
        provider_retries = integer("VDB_PROVIDER_RETRIES", cls.provider_retries, 0, 20)
        query_cache_size = integer("VDB_QUERY_CACHE_SIZE", cls.query_cache_size, 0, 1_000_000)

        def seconds(name: str, default: float, minimum: float, maximum: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
                if not minimum <= value <= maximum:
                    raise ValueError
            except ValueError:
                problems.append(f"{name} must be a number of seconds from {minimum:g} to {maximum:g}, got {raw!r}")
                return default
            return value

        provider_timeout = seconds("VDB_PROVIDER_TIMEOUT_SECONDS", cls.provider_timeout_seconds, 0.1, 600)
        query_cache_seconds = seconds("VDB_QUERY_CACHE_SECONDS", cls.query_cache_seconds, 0, 86400)
        slow_search_ms = integer("VDB_SLOW_SEARCH_MS", cls.slow_search_ms, 0, 3_600_000)
        max_metadata_bytes = integer("VDB_MAX_METADATA_BYTES", cls.max_metadata_bytes, 2, 2**31 - 1)
        max_metadata_depth = integer("VDB_MAX_METADATA_DEPTH", cls.max_metadata_depth, 1, 32)
        max_schema_bytes = integer("VDB_MAX_SCHEMA_BYTES", cls.max_schema_bytes, 2, 16 * MIB)
        max_schema_depth = integer("VDB_MAX_SCHEMA_DEPTH", cls.max_schema_depth, 1, 100)
        max_schema_subschemas = integer("VDB_MAX_SCHEMA_SUBSCHEMAS", cls.max_schema_subschemas, 1, 10_000_000)
        max_text_chars = integer("VDB_MAX_TEXT_CHARS", cls.max_text_chars, 1, 2**31 - 1)
        max_page_token_chars = integer("VDB_MAX_PAGE_TOKEN_CHARS", cls.max_page_token_chars, 64, 1 * MIB)


        drain = seconds("VDB_SHUTDOWN_DRAIN_SECONDS", cls.shutdown_drain_seconds, 0, 3600)
        allow_reset_raw = (get("VDB_ALLOW_RESET") or "false").lower()
        if allow_reset_raw not in ("true", "false"):
            problems.append(f"VDB_ALLOW_RESET must be true or false, got {allow_reset_raw!r}")
        probe = seconds("VDB_HEALTH_PROBE_SECONDS", cls.health_probe_seconds, 0.05, 60)
        connect_timeout = seconds("VDB_DB_CONNECT_TIMEOUT_SECONDS", cls.db_connect_timeout_seconds, 0.1, 300)
        acquire_timeout = seconds("VDB_POOL_ACQUIRE_TIMEOUT_SECONDS", cls.pool_acquire_timeout_seconds, 0.1, 300)
        restart_backoff = seconds(
            "VDB_EMBEDDED_RESTART_BACKOFF_SECONDS", cls.embedded_restart_backoff_seconds, 0.25, 300
        )
        seal_min = integer("VDB_INDEX_SEAL_MIN_ROWS", cls.index_seal_min_rows, 1, 10_000_000)
        seal_max = integer("VDB_INDEX_SEAL_MAX_ROWS", cls.index_seal_max_rows, 1, 100_000_000)
        if seal_min > seal_max:
            problems.append(
                f"VDB_INDEX_SEAL_MIN_ROWS ({seal_min}) must not exceed VDB_INDEX_SEAL_MAX_ROWS ({seal_max})"
            )
        max_segments = integer("VDB_INDEX_MAX_SEGMENTS", cls.index_max_segments, 1, 64)
        interim_min = integer("VDB_INDEX_INTERIM_MIN_ROWS", cls.index_interim_min_rows, 0, 100_000_000)
        build_memory = integer("VDB_INDEX_BUILD_MEMORY_MB", cls.index_build_memory_mb, 0, 1_000_000)
        build_workers = integer("VDB_INDEX_BUILD_WORKERS", cls.index_build_workers, -1, 64)
        build_nice = integer("VDB_INDEX_BUILD_NICE", cls.index_build_nice, 0, 19)

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
            metrics_listen=metrics_listen,
            log_format=log_format,
            access_log=access_log,
            rate_limit_rps=rate_limit_rps,
            rate_limit_burst=rate_limit_burst,
            database_read_url=database_read_url,
            provider_allow=provider_allow,
            provider_concurrency=provider_concurrency,
            provider_timeout_seconds=provider_timeout,
            provider_retries=provider_retries,
            query_cache_size=query_cache_size,
            query_cache_seconds=query_cache_seconds,
            slow_search_ms=slow_search_ms,
            max_metadata_bytes=max_metadata_bytes,
            max_metadata_depth=max_metadata_depth,
            max_schema_bytes=max_schema_bytes,
            max_schema_depth=max_schema_depth,
            max_schema_subschemas=max_schema_subschemas,
            max_text_chars=max_text_chars,
            max_page_token_chars=max_page_token_chars,
            shutdown_drain_seconds=drain,
            allow_reset=allow_reset_raw == "true",
            health_probe_seconds=probe,
            db_connect_timeout_seconds=connect_timeout,
            pool_acquire_timeout_seconds=acquire_timeout,
            embedded_restart_backoff_seconds=restart_backoff,
            index_seal_min_rows=seal_min,
            index_seal_max_rows=seal_max,
            index_max_segments=max_segments,
            index_interim_min_rows=interim_min,
            index_build_memory_mb=build_memory,
            index_build_workers=build_workers,
            index_build_nice=build_nice,
        )

    @property
    def limits(self) -> Limits:
        """The per-request limits of client data (``vdb_grpc.limits``)."""
        return Limits(
            metadata_bytes=self.max_metadata_bytes,
            metadata_depth=self.max_metadata_depth,
            schema_bytes=self.max_schema_bytes,
            schema_depth=self.max_schema_depth,
            schema_subschemas=self.max_schema_subschemas,
            text_chars=self.max_text_chars,
            page_token_chars=self.max_page_token_chars,
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (used to fill in embedded-mode secrets and test overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _allow_entry_ok(entry: str) -> bool:
    """A VDB_PROVIDER_ALLOW entry: an IP address, a CIDR, or a DNS host name."""
    try:
        ipaddress.ip_network(entry.strip("[]"), strict=False)
        return True
    except ValueError:
        pass
    return len(entry) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in entry.rstrip(".").split("."))
