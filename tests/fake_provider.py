"""A fake embedding provider: a real HTTP/1.1 server on 127.0.0.1 speaking every request shape.

Why ``http.server`` in a thread: it is in the standard library (no test dependency), speaks real HTTP/1.1
with keep-alive (so connection reuse is exercised), and runs outside the event loop under test, so a slow or
failing answer is the provider's doing, never the test loop's. ``ThreadingHTTPServer`` answers concurrent
requests concurrently, which the concurrency tests and the benchmark need.

Shapes by path: ``/v1/embeddings`` (openai), ``/v2/embed`` (cohere), ``…:batchEmbedContents`` (gemini),
``/api/embed`` (ollama). Vectors are derived from the text alone (SHA-256 → values), so the same text always
gets the same vector whatever the form, and a text search for a stored text finds it with similarity 1.

Failing on command: ``fail(kind, times)`` queues failures for the next requests — 401, 403, 429 (with
``retry_after``), 500, ``slow`` (``seconds`` before answering), ``wrong_dims``, ``too_few``, ``too_long``,
``redirect``. Rule-based, for requests whose texts contain a marker: a text containing ``TOO_LONG`` gets a
too-long error (whatever else is in the request, as real providers do), one containing ``FAIL_401`` a 401,
one containing ``SLOW`` waits a second first.
Error messages echo the key the request carried, so tests see that it never travels further.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SHAPE_PATHS = {"openai": "/v1/embeddings", "cohere": "/v2/embed", "ollama": "/api/embed"}
KNOWN_BODY_MEMBERS = {
    "model", "input", "encoding_format", "dimensions", "texts", "input_type", "embedding_types", "truncate",
    "output_dimension", "requests",
}  # fmt: skip


#: Every value a fake vector can hold, k/128 - 1 for k in 0..255, as JSON text (the benchmark's fake provider
#: answers thousands of vectors a second; building their JSON from this table is ~20x faster than json.dumps).
_VALUE_JSON = [repr(k / 128.0 - 1.0) for k in range(256)]


def _fake_bytes(text: str, dims: int) -> bytes:
    raw = bytearray(hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(dims))
    if not any(b != 128 for b in raw):  # all zero: give it a direction
        raw[0] = 192
    return bytes(raw)


def fake_vector(text: str, dims: int) -> list[float]:
    """The deterministic vector of ``text``: values k/128 - 1 (k in 0..255) from SHAKE-256 of the text."""
    return [k / 128.0 - 1.0 for k in _fake_bytes(text, dims)]


class RawJSON(str):
    """Already-encoded JSON (a vector), spliced into an answer by ``_encode``."""


#: Encoded vectors by (text, dims): the benchmark warms this so the fake's own CPU is not what it measures.
_JSON_CACHE: dict[tuple[str, int], RawJSON] = {}
_JSON_CACHE_MAX = 200_000


def _vector_json(text: str, dims: int) -> RawJSON:
    cached = _JSON_CACHE.get((text, dims))
    if cached is None:
        cached = RawJSON("[" + ",".join([_VALUE_JSON[k] for k in _fake_bytes(text, dims)]) + "]")
        if len(_JSON_CACHE) < _JSON_CACHE_MAX:
            _JSON_CACHE[(text, dims)] = cached
    return cached


def _encode(value: Any) -> str:
    """JSON of an answer whose vectors are ``RawJSON``."""
    if isinstance(value, RawJSON):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Recorded:
    """One request as the fake saw it."""

    shape: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]
    texts: list[str]
    #: input_type (cohere) or taskType (gemini); "" for shapes without a form.
    form: str

    def key_places(self, key: str) -> list[str]:
        """Where ``key`` arrived: "header:<name>", "bearer:<header>", "query:<name>", "body:<member>"."""
        out = []
        for name, value in self.headers.items():
            if value == f"Bearer {key}":
                out.append(f"bearer:{name}")
            elif value == key:
                out.append(f"header:{name}")
        out += [f"query:{n}" for n, values in self.query.items() if key in values]
        out += [f"body:{n}" for n, v in self.body.items() if v == key]
        return out


@dataclass
class Failure:
    kind: str
    retry_after: str | None = None
    seconds: float = 0.0


@dataclass
class FakeProvider:
    """The fake; ``start()`` binds a free port on 127.0.0.1."""

    dims: int = 4
    #: Seconds every request takes (the benchmark sets 0.1).
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ----------------------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Serve from a thread (one more thread per connection)."""
        fake = self

        class Handler(_Handler):
            provider = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def url(self, shape: str, host: str = "127.0.0.1", model: str = "fake-model") -> str:
        """The endpoint an instance of ``shape`` is given."""
        if shape == "gemini":
            return f"http://{host}:{self.port}/v1beta/models/{model}:embedContent"
        return f"http://{host}:{self.port}{SHAPE_PATHS[shape]}"

    def fail(self, kind: str, times: int = 1, *, retry_after: str | None = None, seconds: float = 0.0) -> None:
        """Make the next ``times`` requests fail with ``kind``."""
        with self._lock:
            self.failures.extend(Failure(kind, retry_after, seconds) for _ in range(times))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.failures.clear()
            self.max_in_flight = 0

    @property
    def texts_seen(self) -> list[str]:
        return [t for r in self.requests for t in r.texts]

    # --- serving ----------------------------------------------------------------------------------------------

    def _next_failure(self) -> Failure | None:
        with self._lock:
            return self.failures.pop(0) if self.failures else None

    def answer(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any]:
        shape, texts, form, dims = _parse(path, body, self.dims)
        rec = Recorded(shape, path, query, headers, body, texts, form)
        with self._lock:
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            carried = " ".join(v for v in [*headers.values(), *(x for vs in query.values() for x in vs)] if v)
            carried += " " + " ".join(str(body[k]) for k in body if k not in KNOWN_BODY_MEMBERS)
            if any("SLOW" in t for t in texts):
                time.sleep(1.0)
            if any("FAIL_401" in t for t in texts):
                return 401, {}, {"error": {"message": f"invalid key: {carried}"}}
            if any("TOO_LONG" in t for t in texts):
                return 400, {}, _too_long(shape)
            failure = self._next_failure()
            if failure is not None:
                if failure.kind == "slow":
                    time.sleep(failure.seconds)
                elif failure.kind in ("401", "403"):
                    return int(failure.kind), {}, {"error": {"message": f"Incorrect API key provided: {carried}"}}
                elif failure.kind == "429":
                    extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                    return 429, extra, {"error": {"message": "rate limit reached for your key " + carried}}
                elif failure.kind == "500":
                    return 500, {}, {"error": {"message": "internal trouble " + carried + " " + "=" * 500}}
                elif failure.kind == "redirect":
                    return 307, {"Location": f"http://127.0.0.1:{self.port}/elsewhere"}, {}
                elif failure.kind == "too_long":
                    return 400, {}, _too_long(shape)
                elif failure.kind == "wrong_dims":
                    dims += 1
                elif failure.kind == "too_few":
                    texts = texts[:-1]
            return 200, {}, _vectors(shape, [_vector_json(t, dims) for t in texts])
        finally:
            with self._lock:
                self.in_flight -= 1


def _parse(path: str, body: dict[str, Any], default_dims: int) -> tuple[str, list[str], str, int]:
    if path.endswith(":batchEmbedContents"):
        reqs = body["requests"]
        texts = [r["content"]["parts"][0]["text"] for r in reqs]
        dims = reqs[0].get("outputDimensionality", default_dims) if reqs else default_dims
        return "gemini", texts, reqs[0]["taskType"] if reqs else "", dims
    if path == "/v2/embed":
        return "cohere", list(body["texts"]), body["input_type"], body.get("output_dimension", default_dims)
    if path == "/api/embed":
        return "ollama", list(body["input"]), "", default_dims
    if path == "/v1/embeddings":
        return "openai", list(body["input"]), "", body.get("dimensions", default_dims)
    raise LookupError(path)


def _vectors(shape: str, vectors: list[Any]) -> Any:
    if shape == "openai":
        # In reverse order, with their index: clients must sort.
        return {"object": "list", "data": [{"index": i, "embedding": v} for i, v in reversed(list(enumerate(vectors)))]}
    if shape == "cohere":
        return {"id": "x", "embeddings": {"float": vectors}}
    if shape == "gemini":
        return {"embeddings": [{"values": v} for v in vectors]}
    return {"model": "fake", "embeddings": vectors}


def _too_long(shape: str) -> Any:
    messages = {
        "openai": "This model's maximum context length is 8192 tokens, however you requested 9000 tokens",
        "cohere": "invalid request: text is too long; max tokens is 512",
        "gemini": "The input token count (3000) exceeds the maximum number of tokens allowed (2048).",
        "ollama": "the input length exceeds the context length",
    }
    return {"error": {"message": messages[shape]}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body would wait for the client's
    # delayed ACK of the headers (~40 ms a response).
    disable_nagle_algorithm = True
    provider: FakeProvider

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        parts = urlsplit(self.path)
        try:
            body = json.loads(raw)
            status, extra, answer = self.provider.answer(
                parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body
            )
        except (LookupError, ValueError, TypeError):
            status, extra, answer = 404, {}, {"error": {"message": f"no such endpoint {parts.path}"}}
        data = _encode(answer).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    """``python tests/fake_provider.py --delay 0.1 --dims 384``: serve until stdin closes (the benchmark runs
    the fake in its own process so that its JSON work does not compete with the server for the GIL)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--dims", type=int, default=4)
    args = parser.parse_args()
    fake = FakeProvider(dims=args.dims, delay=args.delay).start()
    print(fake.port, flush=True)
    sys.stdin.read()
    fake.stop()


if __name__ == "__main__":
    main()
