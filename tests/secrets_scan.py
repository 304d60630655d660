"""A suite-wide secrets scan: no user key, admin key or provider key ever appears in a response, error or log.

Registered by tests/conftest.py for the whole session. It

- wraps ``grpc.aio.insecure_channel`` so that every channel any test opens carries a client interceptor, which
  learns the secrets a request sends (the bearer key in its metadata, any ``api_key`` field) and records what
  comes back (the response as text, or the error's details and trailers, ``google.rpc`` details decoded);
  a response's own top-level ``api_key`` (CreateUser, RotateUserKey, UpdateUser creating a user: the one
  legitimate place a key is shown) is learned and left out of the recorded text;
- adds a handler to the root logger that keeps every record emitted (with its traceback), and lets the
  service's loggers (``vdb_grpc.*``) emit at every level for the session;
- after each test scans what that test recorded for every secret learned so far in the session (plus the
  test admin and encryption keys), and reports a hit as an error of that test.

Cost: one dict walk of each request's singular sub-messages, one ``str`` of each response, and at test end a
regex scan (64-hex-character runs are looked up in a set; other secrets through one alternation).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2

#: Secrets shorter than this are not scanned for ("x" or "nope" as a deliberately wrong key would match
#: everywhere); every key the service issues is 64 characters.
MIN_SECRET = 16
_HEX64 = re.compile(r"[0-9a-f]{64,}")
_FORMATTER = logging.Formatter()


class SecretScanner:
    """Learns secrets, records texts, finds the one in the other."""

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self.hex_secrets: set[str] = set()
        self.other_secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._pattern_size = -1
        self.texts: list[tuple[str, str]] = []  # (where, text)
        self.records: list[logging.LogRecord] = []
        self.scanned_texts = 0
        self.scanned_records = 0
        self.scan_seconds = 0.0
        #: False while a test marked ``adversarial_values`` runs: what it sends as keys are attack inputs
        #: (``../../etc/passwd``, a handle) that legitimately come back in errors, not secrets.
        self.learning_requests = True
        for s in initial:
            self.learn(s)

    # --- learning ----------------------------------------------------------------------------------------

    def learn(self, secret: str) -> None:
        """Remember ``secret`` (ignored when shorter than ``MIN_SECRET``)."""
        if len(secret) < MIN_SECRET:
            return
        if len(secret) == 64 and _HEX64.fullmatch(secret):
            self.hex_secrets.add(secret)
        else:
            self.other_secrets.add(secret)

    def learn_request(self, metadata: Any, request: Any) -> None:
        """The bearer key of ``metadata`` and any ``api_key`` of ``request`` (top level and sub-messages)."""
        if not self.learning_requests:
            return
        for key, value in metadata or ():
            if key.lower() == "authorization":
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                self.learn(text.partition(" ")[2].strip())
        if isinstance(request, Message):
            self._learn_api_keys(request, depth=0)

    def _learn_api_keys(self, message: Message, depth: int) -> None:
        for field, value in message.ListFields():
            if field.name == "api_key" and isinstance(value, str):
                self.learn(value)
            elif isinstance(value, Message) and depth < 3:  # singular sub-messages (not repeated ones)
                self._learn_api_keys(value, depth + 1)

    # --- recording -----------------------------------------------------------------------------------------

    def record_response(self, method: str, response: Any) -> None:
        """Record a response; a top-level ``api_key`` it issues is learned, not recorded."""
        if isinstance(response, Message):
            if "api_key" in response.DESCRIPTOR.fields_by_name and getattr(response, "api_key", ""):
                self.learn(response.api_key)  # type: ignore[attr-defined]
                shown = type(response)()
                shown.CopyFrom(response)
                shown.ClearField("api_key")
                response = shown
            self.texts.append((f"response of {method}", str(response)))

    def record_error(self, method: str, err: grpc.aio.AioRpcError) -> None:
        parts = [err.details() or ""]
        for key, value in err.trailing_metadata() or ():
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                parts.append(str(status_pb2.Status.FromString(value)))
                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    parts.append(detail.value.decode("utf-8", "replace"))
            else:
                parts.append(f"{key}: {value!r}")
        self.texts.append((f"error of {method}", "\n".join(parts)))

    # --- scanning ------------------------------------------------------------------------------------------

    def _other_pattern(self) -> re.Pattern[str] | None:
        if not self.other_secrets:
            return None
        if self._pattern is None or self._pattern_size != len(self.other_secrets):
            alternatives = sorted(self.other_secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))
            self._pattern_size = len(self.other_secrets)
        return self._pattern

    def find(self, text: str) -> str | None:
        """The first secret found in ``text``, or None."""
        for run in _HEX64.findall(text):
            for i in range(len(run) - 63):
                if run[i : i + 64] in self.hex_secrets:
                    return run[i : i + 64]
        pattern = self._other_pattern()
        if pattern is not None:
            m = pattern.search(text)
            if m is not None:
                return m.group(0)
        return None

    def drain(self) -> list[str]:
        """Scan and forget what was recorded since the last call; return one line per hit."""
        started = time.perf_counter()
        self.scanned_texts += len(self.texts)
        self.scanned_records += len(self.records)
        hits = []
        for where, text in self.texts:
            secret = self.find(text)
            if secret is not None:
                hits.append(f"{where} contains a secret ({secret[:6]}…): {text[:200]!r}")
        for record in self.records:
            try:
                text = record.getMessage()
            except Exception:
                text = str(record.msg)
            if record.exc_info:
                text += "\n" + _FORMATTER.formatException(record.exc_info)
            if record.exc_text:
                text += "\n" + record.exc_text
            secret = self.find(text)
            if secret is not None:
                hits.append(f"log record of {record.name} contains a secret ({secret[:6]}…): {text[:200]!r}")
        self.texts.clear()
        self.records.clear()
        self.scan_seconds += time.perf_counter() - started
        return hits


class _Recorder(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    """Client interceptor feeding a ``SecretScanner`` (both request shapes the protos use)."""

    def __init__(self, scanner: SecretScanner) -> None:
        self._scanner = scanner

    async def _finish(self, method: str, call: Any) -> Any:
        try:
            response = await call
        except grpc.aio.AioRpcError as err:
            self._scanner.record_error(method, err)
        else:
            self._scanner.record_response(method, response)
        return call

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        method = _name(client_call_details.method)
        self._scanner.learn_request(client_call_details.metadata, request)
        call = await continuation(client_call_details, request)
        return await self._finish(method, call)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        method = _name(client_call_details.method)
        self._scanner.learn_request(client_call_details.metadata, None)
        call = await continuation(client_call_details, request_iterator)
        return await self._finish(method, call)


def _name(method: Any) -> str:
    return method.decode() if isinstance(method, bytes) else str(method)


class _KeepRecords(logging.Handler):
    def __init__(self, scanner: SecretScanner) -> None:
        super().__init__(logging.NOTSET)
        self._scanner = scanner

    def emit(self, record: logging.LogRecord) -> None:
        self._scanner.records.append(record)


class SecretsScanPlugin:
    """The pytest plugin: installs the recorder and the log handler, reports hits per test."""

    def __init__(self, initial: Iterable[str]) -> None:
        self.scanner = SecretScanner(initial)
        self._handler = _KeepRecords(self.scanner)
        self._original_channel: Any = None
        self._service_level = logging.NOTSET

    def install(self) -> None:
        logging.getLogger().addHandler(self._handler)
        # The service's records at every level, not only those above the root's WARNING: a key in a DEBUG line
        # is a leak too.
        service = logging.getLogger("vdb_grpc")
        self._service_level = service.level
        service.setLevel(logging.DEBUG)
        original = grpc.aio.insecure_channel
        recorder = _Recorder(self.scanner)

        def insecure_channel(
            target: str, options: Any = None, compression: Any = None, interceptors: Any = None
        ) -> Any:
            return original(target, options, compression, [*(interceptors or ()), recorder])

        self._original_channel = original
        grpc.aio.insecure_channel = insecure_channel

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        logging.getLogger("vdb_grpc").setLevel(self._service_level)
        if self._original_channel is not None:
            grpc.aio.insecure_channel = self._original_channel

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.scanner.learning_requests = item.get_closest_marker("adversarial_values") is None

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        """After the test's fixtures are torn down (their servers' last log lines included): scan."""
        hits = self.scanner.drain()
        if hits:
            raise AssertionError(f"secrets scan of {item.nodeid}: " + "\n".join(hits[:10]))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        s = self.scanner
        terminalreporter.write_line(
            f"secrets scan: {s.scanned_texts} responses/errors and {s.scanned_records} log records scanned for "
            f"{len(s.hex_secrets) + len(s.other_secrets)} secrets in {s.scan_seconds:.2f}s"
        )

    def pytest_unconfigure(self) -> None:
        self.uninstall()
