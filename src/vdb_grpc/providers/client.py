"""Sending provider requests: one shared ``httpx.AsyncClient``, retries, deadlines, concurrency, the key.

- One ``httpx.AsyncClient`` for the server's lifetime (``start``/``close`` from ``VdbServer``): connections
  to a provider are reused. Redirects are not followed and proxy variables of the environment are ignored
  (both would send the request somewhere the egress policy did not check).
- Texts are split into requests of at most the standard's ``max_inputs`` (else the shape's limit); at most
  ``concurrency`` requests per instance are in flight (per server), the rest wait their turn.
- Every request is bounded by the caller's remaining gRPC deadline and by ``timeout``; 429, 5xx, timeouts
  and connection errors are retried up to ``retries`` times with exponential backoff and full jitter,
  waiting at least what ``Retry-After`` asks, and never past the deadline (nor longer than ``timeout``:
  a longer Retry-After is passed on to the client as ``google.rpc.RetryInfo`` instead).
- The key is decrypted with ``ApiKeyCipher`` right before a request is built and placed exactly where the
  standard's ``key_method``/``key_field`` say (``auth_bearer``: ``Authorization: Bearer``, ``custom_header``:
  that header, ``query_param``: that URL parameter, ``body_form``: that top-level member of the JSON body).
  It is never logged, never put into an error, a metric label or a response: provider messages are cut
  short and have the key removed; httpx's own request log line has its query string redacted
  (``_RedactQuery``), since a ``query_param`` key travels there.
- Errors (``vdb_grpc.errors``): 401/403 → FailedPrecondition naming the instance; 429 past the retries →
  ResourceExhausted with ``retry_after_seconds``; 5xx, timeouts, connection errors past the retries → Unavailable;
  a wrong number of vectors or dimensions, or an unreadable answer → FailedPrecondition; a text the provider
  refuses as too long → ``TextTooLong`` (its index; multi-text requests are bisected to find it).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson

from vdb_grpc.crypto import ApiKeyCipher, ApiKeyDecryptionError
from vdb_grpc.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    PreconditionViolation,
    ResourceExhausted,
    TextTooLong,
    Unavailable,
    VdbError,
)
from vdb_grpc.providers import cohere, gemini, ollama, openai
from vdb_grpc.providers.egress import EgressPolicy
from vdb_grpc.providers.shape import NULL_OBSERVER, EmbedForm, ProviderObserver, ProviderTarget, Shape

log = logging.getLogger(__name__)

SHAPES: dict[str, Shape] = {s.name: s for s in (openai.SHAPE, cohere.SHAPE, gemini.SHAPE, ollama.SHAPE)}
#: Provider error messages shown to clients are cut to this many characters.
MESSAGE_MAX = 200
#: First backoff step in seconds (doubled per retry, full jitter) and the longest single wait.
BACKOFF_BASE = 0.25
BACKOFF_MAX = 20.0
#: Less time than this left before the caller's deadline: no request is started.
MIN_REQUEST_SECONDS = 0.05
#: Status codes whose error text is checked for "too long" (the providers use 400; 413/422 seen in proxies).
TOO_LONG_STATUSES = frozenset({400, 413, 422})
TOO_LONG_RE = re.compile(
    r"context length|too long|too many tokens|maximum.{0,40}tokens|exceeds?.{0,40}(length|limit|context)|"
    r"input length|token limit",
    re.IGNORECASE,
)


class _TooLong(Exception):
    """A request was refused for a too-long input (which one is found by bisection)."""

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


class _RedactQuery(logging.Filter):
    """Removes query strings from httpx's request log lines (a ``query_param`` key travels there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                a.copy_with(query=b"redacted") if isinstance(a, httpx.URL) and a.query else a for a in record.args
            )
        return True


_REDACT = _RedactQuery()
for _name in ("httpx", "httpcore"):
    if _REDACT not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_REDACT)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _summary(response: httpx.Response, secret: str | None) -> str:
    """``HTTP <status>: <the provider's error message, cut short>`` with the key removed."""
    text = ""
    try:
        body = orjson.loads(response.content)
        err = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(err, dict):
            err = err.get("message") or err.get("msg") or err.get("detail") or ""
        text = err if isinstance(err, str) else json.dumps(err)[:MESSAGE_MAX]
    except (ValueError, UnicodeDecodeError):
        text = response.text if response.headers.get("content-type", "").startswith("text/") else ""
    if secret:
        text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    if len(text) > MESSAGE_MAX:
        text = text[: MESSAGE_MAX - 1] + "…"
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def _precondition(target: ProviderTarget, message: str, kind: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"instance {target.instance}: {message}",
        preconditions=[PreconditionViolation(kind, f"instance:{target.instance}", message)],
    )


class ProviderClient:
    """Embeds texts through instances' providers (one per server)."""

    def __init__(
        self,
        cipher: ApiKeyCipher | None,
        *,
        egress: EgressPolicy,
        concurrency: int = 4,
        timeout: float = 30.0,
        retries: int = 3,
        observer: ProviderObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        """Args:
        cipher: decrypts instances' keys; None when the server has no ENCRYPTION_KEY.
        egress: which addresses requests may go to (``VDB_PROVIDER_ALLOW``).
        concurrency: most requests in flight per instance (``VDB_PROVIDER_CONCURRENCY``).
        timeout: longest single request in seconds (``VDB_PROVIDER_TIMEOUT_SECONDS``).
        retries: retries after 429, 5xx, timeouts and connection errors (``VDB_PROVIDER_RETRIES``).
        observer: told of every request and retry (metrics).
        transport: an httpx transport (tests); None: httpx's default.
        """
        self._cipher = cipher
        self._egress = egress
        self._concurrency = concurrency
        self._timeout = timeout
        self._retries = retries
        self._observer = observer or NULL_OBSERVER
        self._transport = transport
        self._sleep = sleep
        self._http: httpx.AsyncClient | None = None
        self._limits: dict[int, asyncio.Semaphore] = {}

    @property
    def concurrency(self) -> int:
        """Most requests in flight per instance."""
        return self._concurrency

    async def start(self) -> None:
        """Open the shared HTTP client (``VdbServer.start``)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=60),
                transport=self._transport,
            )

    async def close(self) -> None:
        """Close the shared HTTP client and its connections (``VdbServer.stop``)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def shape_of(self, target: ProviderTarget) -> Shape:
        """The request shape of ``target``'s standard.

        Raises:
            FailedPrecondition: the standard names no shape the service speaks.
        """
        shape = SHAPES.get(target.shape)
        if shape is None:
            raise _precondition(
                target,
                f"its API standard {target.api_standard!r} names no request shape the service can call "
                f"(request_shape must be one of {', '.join(SHAPES)}); set it with UpdateApiStandard",
                "NO_REQUEST_SHAPE",
            )
        return shape

    def check_key(self, target: ProviderTarget) -> None:
        """Refuse an instance without a key where its standard needs one, or a key this server cannot read.

        Raises:
            FailedPrecondition: naming the instance.
        """
        if not target.has_key and not target.key_optional:
            raise _precondition(
                target,
                f"has no API key, and its API standard {target.api_standard!r} needs one; set it with "
                "UpdateInstance (api_key)",
                "NO_API_KEY",
            )
        if target.encrypted_key is not None and self._cipher is None:
            raise _precondition(
                target, "this server has no ENCRYPTION_KEY, so it cannot read the instance's API key", "NO_CIPHER"
            )

    def _key(self, target: ProviderTarget) -> str | None:
        """The plaintext key, for one request."""
        if target.encrypted_key is not None:
            assert self._cipher is not None  # check_key
            try:
                return self._cipher.decrypt(target.encrypted_key, owner=target.owner, instance_handle=target.handle)
            except ApiKeyDecryptionError:
                raise _precondition(
                    target,
                    "its stored API key cannot be decrypted with this server's ENCRYPTION_KEY; set the key again",
                    "API_KEY_UNREADABLE",
                ) from None
        return target.legacy_key or None

    async def embed(
        self, target: ProviderTarget, texts: list[str], form: EmbedForm, deadline: float | None
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One float32 row per text, ``target.dimensions`` wide.

        Args:
            deadline: ``time.monotonic()`` by which the caller needs the answer; None = no deadline.

        Raises:
            TextTooLong: the provider refused ``texts[e.index]`` as too long.
            FailedPrecondition, ResourceExhausted, Unavailable, DeadlineExceeded: see the module docstring.
        """
        shape = self.shape_of(target)
        self.check_key(target)
        out = np.empty((len(texts), target.dimensions), dtype=np.float32)
        if not texts:
            return out
        size = target.max_inputs or shape.max_inputs
        chunks = [(i, texts[i : i + size]) for i in range(0, len(texts), size)]
        if len(chunks) == 1:
            out[:] = await self._chunk(target, shape, chunks[0][1], chunks[0][0], form, deadline)
            return out
        tasks = [
            asyncio.create_task(self._chunk(target, shape, chunk, start, form, deadline)) for start, chunk in chunks
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:  # the first failure in text order (cancelled requests are not failures)
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
        for (start, chunk), rows in zip(chunks, outcomes, strict=True):
            assert isinstance(rows, np.ndarray)
            out[start : start + len(chunk)] = rows
        return out

    async def _chunk(
        self,
        target: ProviderTarget,
        shape: Shape,
        texts: list[str],
        offset: int,
        form: EmbedForm,
        deadline: float | None,
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One request's worth of texts; on a too-long refusal, halves until the culprit is alone."""
        try:
            return await self._request(target, shape, texts, form, deadline)
        except _TooLong as exc:
            if len(texts) == 1:
                raise TextTooLong(
                    f"the provider of instance {target.instance} refused the text as too long ({exc.summary})",
                    offset,
                ) from None
        mid = len(texts) // 2
        left = await self._chunk(target, shape, texts[:mid], offset, form, deadline)
        right = await self._chunk(target, shape, texts[mid:], offset + mid, form, deadline)
        return np.concatenate([left, right])

    def _limit(self, target: ProviderTarget) -> asyncio.Semaphore:
        sem = self._limits.get(target.instance_id)
        if sem is None:
            sem = self._limits[target.instance_id] = asyncio.Semaphore(self._concurrency)
        return sem

    async def _request(
        self, target: ProviderTarget, shape: Shape, texts: list[str], form: EmbedForm, deadline: float | None
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One request, retried; the vectors checked for count, dimensions and finiteness."""
        attempt = 0
        while True:
            failure, wait_hint, reason = await self._attempt(target, shape, texts, form, deadline)
            if isinstance(failure, np.ndarray):
                return failure
            attempt += 1
            wait = min(BACKOFF_MAX, random.uniform(0, BACKOFF_BASE * 2**attempt))  # noqa: S311 - jitter
            if wait_hint is not None:
                wait = max(wait, wait_hint)
            remaining = None if deadline is None else deadline - time.monotonic()
            # A Retry-After longer than a whole request may take is not waited for: the client hears it instead.
            too_long = wait_hint is not None and wait_hint > self._timeout
            if (
                attempt > self._retries
                or too_long
                or (remaining is not None and wait + MIN_REQUEST_SECONDS >= remaining)
            ):
                if reason == "rate_limited":
                    raise ResourceExhausted(
                        f"the provider of instance {target.instance} is rate limiting the instance's key "
                        f"({failure}); retry later",
                        retry_after_seconds=wait_hint if wait_hint is not None else wait,
                    )
                raise Unavailable(
                    f"the provider of instance {target.instance} is unavailable ({failure}"
                    + (f", after {attempt - 1} retries" if attempt > 1 else "")
                    + "); retry later"
                )
            self._observer.provider_retry(shape=shape.name, instance=target.instance, reason=reason)
            await self._sleep(wait)

    async def _attempt(
        self, target: ProviderTarget, shape: Shape, texts: list[str], form: EmbedForm, deadline: float | None
    ) -> tuple[Any, float | None, str]:
        """One try: (vectors, None, "") on success, else (summary, Retry-After seconds, retry reason).

        Raises the errors that are not retried.
        """
        http = self._http
        if http is None:
            raise Unavailable("the server is not serving (its provider client is closed)")
        async with self._limit(target):
            timeout = self._timeout
            cut_by_deadline = False
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining < MIN_REQUEST_SECONDS:
                    raise DeadlineExceeded(
                        f"the call's deadline left no time for a request to the provider of instance {target.instance}"
                    )
                cut_by_deadline = remaining < timeout
                timeout = min(timeout, remaining)
            url = httpx.URL(shape.url(target))
            started = time.perf_counter()
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                resolved = await self._egress.resolve(url.host, port, target.instance)
            except FailedPrecondition:
                self._observer.provider_call(
                    shape=shape.name, instance=target.instance, outcome="egress_refused", seconds=0.0
                )
                raise
            key = self._key(target)
            request = self._build(http, target, shape, url, resolved.address, texts, form, key, timeout)
            outcome = "unavailable"
            try:
                try:
                    async with asyncio.timeout(timeout):
                        response = await http.send(request)
                except (TimeoutError, httpx.TimeoutException):
                    if cut_by_deadline:
                        raise DeadlineExceeded(
                            f"the call's deadline passed while waiting for the provider of instance {target.instance}"
                        ) from None
                    return f"no answer within {timeout:.1f}s", None, "timeout"
                except httpx.TransportError as exc:
                    return f"connection failed: {type(exc).__name__}", None, "connection"
                try:
                    outcome, result = self._classify(target, shape, response, texts, key)
                except _TooLong:
                    outcome = "too_long"
                    raise
                except FailedPrecondition as exc:
                    kind = exc.preconditions[0].type if exc.preconditions else ""
                    outcome = {"API_KEY_REFUSED": "auth_refused", "BAD_RESPONSE": "bad_response"}.get(kind, "refused")
                    raise
                return result
            finally:
                self._observer.provider_call(
                    shape=shape.name, instance=target.instance, outcome=outcome, seconds=time.perf_counter() - started
                )

    def _build(
        self,
        http: httpx.AsyncClient,
        target: ProviderTarget,
        shape: Shape,
        url: httpx.URL,
        address: str,
        texts: list[str],
        form: EmbedForm,
        key: str | None,
        timeout: float,
    ) -> httpx.Request:
        """The request to ``address`` (the checked one) for ``url``'s host, the key placed per the standard."""
        body = shape.body(target, texts, form)
        headers = {"host": url.netloc.decode("ascii"), "accept": "application/json"}
        params: dict[str, str] = {}
        if key:
            method, field = target.key_method, target.key_field
            if method == "auth_bearer":
                headers[field or "authorization"] = f"Bearer {key}"
            elif method == "custom_header" and field:
                headers[field] = key
            elif method == "query_param" and field:
                params[field] = key
            elif method == "body_form" and field:
                body[field] = key
            else:
                raise _precondition(
                    target,
                    f"its API standard {target.api_standard!r} (key_method {method!r}) names no key_field to put "
                    "the key in",
                    "NO_KEY_FIELD",
                )
        # Plain http goes to the address the egress policy checked (a DNS answer changed since cannot redirect it);
        # https keeps the host name: TLS then checks the certificate against it, which an internal server
        # reached through a changed DNS answer cannot present (and a pinned connection could be reused for
        # another host name sharing that address).
        target_url = url.copy_with(host=address) if url.scheme == "http" else url
        if params:
            target_url = target_url.copy_merge_params(params)
        return http.build_request("POST", target_url, json=body, headers=headers, timeout=httpx.Timeout(timeout))

    def _classify(
        self, target: ProviderTarget, shape: Shape, response: httpx.Response, texts: list[str], key: str | None
    ) -> tuple[str, tuple[Any, float | None, str]]:
        """(outcome label, attempt result) of an answer; raises what is not retried."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                rows = shape.vectors(orjson.loads(response.content))
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                raise _precondition(
                    target, f"the provider's answer is not a {shape.name} embeddings answer ({exc})", "BAD_RESPONSE"
                ) from None
            return "ok", (self._matrix(target, rows, len(texts)), None, "")
        summary = _summary(response, key)
        if status in (401, 403):
            raise _precondition(
                target,
                f"the provider refused the instance's API key (HTTP {status}); check or replace it",
                "API_KEY_REFUSED",
            )
        if status == 429:
            return "rate_limited", (summary, retry_after_seconds(response.headers.get("retry-after")), "rate_limited")
        if status >= 500 and status != 501:
            return "unavailable", (summary, retry_after_seconds(response.headers.get("retry-after")), "server_error")
        if status in TOO_LONG_STATUSES and TOO_LONG_RE.search(summary):
            raise _TooLong(summary)
        if 300 <= status < 400:
            raise _precondition(
                target,
                f"the provider answered with a redirect (HTTP {status}), which the server does not follow; set the "
                "instance's endpoint to the final URL",
                "PROVIDER_REDIRECT",
            )
        raise _precondition(target, f"the provider refused the request ({summary})", "PROVIDER_REFUSED")

    @staticmethod
    def _matrix(target: ProviderTarget, rows: list[Any], n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        if len(rows) != n:
            raise _precondition(
                target, f"the provider returned {len(rows)} vectors for {n} texts; nothing was stored", "BAD_RESPONSE"
            )
        try:
            matrix = np.asarray(rows, dtype=np.float32)
        except (ValueError, TypeError):
            matrix = None
        if matrix is None or matrix.ndim != 2 or matrix.shape[1] != target.dimensions:
            sizes = sorted({len(r) if isinstance(r, list) else -1 for r in rows})
            raise _precondition(
                target,
                f"the provider returned vectors of {', '.join(map(str, sizes))} dimensions, but the instance has "
                f"{target.dimensions}; fix the instance's model or dimensions; nothing was stored",
                "BAD_RESPONSE",
            )
        if not np.isfinite(matrix).all():
            raise _precondition(target, "the provider returned non-finite values; nothing was stored", "BAD_RESPONSE")
        return matrix


__all__ = ["SHAPES", "ProviderClient", "TextTooLong", "VdbError"]
