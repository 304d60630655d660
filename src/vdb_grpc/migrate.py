"""Apply and roll back the yoyo migrations in ``migrations/``.

yoyo is synchronous and uses psycopg (not asyncpg); the server calls these functions through
``asyncio.to_thread``. yoyo takes an advisory lock while it applies, so several replicas starting at once
apply each migration exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(os.environ.get("VDB_MIGRATIONS_DIR") or Path(__file__).resolve().parents[2] / "migrations")


def yoyo_url(dsn: str) -> str:
    """Turn a libpq URL (``postgresql://…``) into the URL yoyo wants (``postgresql+psycopg://…``)."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ValueError("database URL must look like postgresql://user:password@host:port/dbname")
    if "+" in scheme:
        return dsn
    return f"postgresql+psycopg://{rest}"


def _backend_and_migrations(dsn: str, migrations_dir: Path | None = None):  # type: ignore[no-untyped-def]
    directory = migrations_dir or MIGRATIONS_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"migrations directory not found: {directory}")
    return get_backend(yoyo_url(dsn)), read_migrations(str(directory))


def pending_migrations(dsn: str, migrations_dir: Path | None = None) -> list[str]:
    """Ids of the migrations not yet applied to the database."""
    backend, migrations = _backend_and_migrations(dsn, migrations_dir)
    try:
        return [m.id for m in backend.to_apply(migrations)]
    finally:
        backend.connection.close()


def apply_migrations(dsn: str, migrations_dir: Path | None = None, *, up_to: str | None = None) -> list[str]:
    """Apply pending migrations (all, or up to and including the id ``up_to``); return the ids applied."""
    backend, migrations = _backend_and_migrations(dsn, migrations_dir)
    try:
        with backend.lock():
            todo = backend.to_apply(migrations)
            if up_to is not None:
                ids = [m.id for m in todo]
                if up_to not in ids:
                    raise ValueError(f"{up_to!r} is not a pending migration (pending: {', '.join(ids) or 'none'})")
                todo = todo[: ids.index(up_to) + 1]
            backend.apply_migrations(todo)
            return [m.id for m in todo]
    finally:
        backend.connection.close()


def rollback_migrations(dsn: str, migrations_dir: Path | None = None, *, down_to: str | None = None) -> list[str]:
    """Roll back applied migrations, newest first (all, or those after the id ``down_to``)."""
    backend, migrations = _backend_and_migrations(dsn, migrations_dir)
    try:
        with backend.lock():
            todo = backend.to_rollback(migrations)
            if down_to is not None:
                applied = [m.id for m in migrations if backend.is_applied(m)]
                if down_to not in applied:
                    raise ValueError(f"{down_to!r} is not an applied migration")
                ids = [m.id for m in todo]
                todo = todo[: ids.index(down_to)] if down_to in ids else todo
            backend.rollback_migrations(todo)
            return [m.id for m in todo]
    finally:
        backend.connection.close()
