"""Bulk import and export of a project's embeddings over gRPC: ``vdb-grpc import`` / ``vdb-grpc export``.

A client of a running server, like any other: it needs the server's address and a key, never the database.

File format, one embedding per record:

* JSONL (``.jsonl``, the default): one JSON object per line, ``{"text_id": "...", "vector": [0.1, ...],
  "text": "...", "metadata": {...}}``; ``text`` and ``metadata`` may be left out. Blank lines are skipped.
* Parquet (``.parquet``, needs ``pyarrow``: ``pip install 'vdb-grpc[parquet]'``): columns ``text_id``
  (string), ``vector`` (list of float), ``text`` (string, nullable), ``metadata`` (string holding a JSON
  object, nullable).

Import checks every record before it is sent and sends batches through ``StreamUpsertEmbeddings`` (each batch
committed on its own, in order). The first bad record stops the import: the records before it are sent and
committed, the bad one and everything after are not, and the report names the record's line (JSONL) or row
(Parquet) number. ``--check`` reads the whole file and reports every bad record without sending anything.
``--resume`` first lists the text_ids the project already holds (ListEmbeddings, no vectors) and skips them,
so an interrupted import continues where its committed batches end.

Export pages through ``ListEmbeddings`` with vectors and writes the same format, so a project can be moved to
another server, or backed up, without SQL. Vectors come back float16-rounded (as stored).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import numpy as np
import orjson

#: Values of a vector must fit float16 (the server stores halfvec).
_FLOAT16_MAX = 65504.0
#: At most this many bad records are listed by --check (the rest are counted).
_MAX_LISTED = 20
#: A stream message stays well below the server's default 64 MiB limit (VDB_MAX_MESSAGE_BYTES).
_MAX_BATCH_BYTES = 16 * 1024 * 1024
_ALLOWED_KEYS = frozenset({"text_id", "vector", "text", "metadata"})
_NUMBER_TYPES = frozenset({float, int})
_BATCH_ERROR = re.compile(r"batch (\d+): embeddings\[(\d+)\]")


class TransferError(Exception):
    """An import or export that cannot go on; the message is for the user, one or a few lines."""


@dataclass(frozen=True)
class Record:
    """One embedding read from a file, checked, and the line (JSONL) or row (Parquet) it came from."""

    line: int
    text_id: str
    vector: list[float]
    text: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be sent, with its line (JSONL) or row (Parquet) number, 1-based."""

    line: int
    problem: str


@dataclass
class ImportResult:
    """What an import did."""

    sent: int = 0
    skipped: int = 0
    committed: int = 0
    inserted: int = 0
    replaced: int = 0
    batches: int = 0
    bad: BadRecord | None = None
    seconds: float = 0.0


@dataclass
class Target:
    """Where to talk to: a server address, a key (may be empty for public projects) and TLS."""

    server: str
    key: str
    tls: bool = False
    ca_file: Path | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),) if self.key else ()

    def channel(self) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", -1)]
        if self.tls:
            roots = self.ca_file.read_bytes() if self.ca_file else None
            return grpc.secure_channel(self.server, grpc.ssl_channel_credentials(roots), options=options)
        return grpc.insecure_channel(self.server, options=options)


def parse_project(name: str) -> tuple[str, str]:
    """``owner/project_handle`` → (owner, handle)."""
    owner, sep, handle = name.partition("/")
    if not sep or not owner or not handle or "/" in handle:
        raise TransferError(f"--project must be owner/project_handle, got {name!r}")
    return owner, handle


def file_format(path: Path | None, given: str | None) -> str:
    """``jsonl`` or ``parquet``: as given, else by the file name (``.parquet`` / anything else)."""
    if given:
        return given
    return "parquet" if path is not None and path.suffix.lower() in (".parquet", ".pq") else "jsonl"


# --- checking records -------------------------------------------------------------------------------------------


def check_record(obj: Any, line: int, dims: int | None) -> Record | BadRecord:
    """A parsed JSON value as a Record, or what is wrong with it (the server's rules that a file can break)."""
    if not isinstance(obj, dict):
        return BadRecord(line, f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _ALLOWED_KEYS)
    if unknown:
        return BadRecord(line, f"unknown field(s) {', '.join(unknown)} (allowed: text_id, vector, text, metadata)")
    text_id = obj.get("text_id")
    if not isinstance(text_id, str) or not text_id:
        return BadRecord(line, "text_id is missing or not a non-empty string")
    if len(text_id) > 1000 or "\x00" in text_id:
        return BadRecord(line, f"text_id {text_id[:40]!r}: longer than 1000 characters or contains NUL")
    vector = obj.get("vector")
    if not isinstance(vector, list) or not vector:
        return BadRecord(line, f"text_id {text_id!r}: vector is missing or not a non-empty list of numbers")
    if dims is not None and len(vector) != dims:
        return BadRecord(line, f"text_id {text_id!r}: vector has {len(vector)} values, the first record {dims}")
    # One pass for the types (bool is an int to numpy, so it is caught here), one reduction for the range.
    if not set(map(type, vector)) <= _NUMBER_TYPES:
        return BadRecord(line, f"text_id {text_id!r}: vector holds a value that is not a number")
    largest = float(np.abs(np.asarray(vector, dtype=np.float64)).max())
    if not largest <= _FLOAT16_MAX:  # also NaN
        return BadRecord(line, f"text_id {text_id!r}: vector holds NaN, infinity or a value beyond ±65504")
    if largest < 3e-8:
        return BadRecord(line, f"text_id {text_id!r}: vector is all zeros (after float16 rounding)")
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        return BadRecord(line, f"text_id {text_id!r}: text is not a string")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return BadRecord(line, f"text_id {text_id!r}: metadata is not a JSON object")
    return Record(line, text_id, vector, text, metadata)


def read_jsonl(stream: IO[bytes]) -> Iterator[tuple[int, int, Any]]:
    """(line number, bytes consumed so far, parsed value or a BadRecord) for each non-blank line."""
    consumed = 0
    for number, raw in enumerate(stream, start=1):
        consumed += len(raw)
        if not raw.strip():
            continue
        try:
            yield number, consumed, orjson.loads(raw)  # refuses NaN and Infinity, as JSON does
        except orjson.JSONDecodeError as exc:
            yield number, consumed, BadRecord(number, f"not valid JSON: {exc}")


def read_parquet(path: Path) -> Iterator[tuple[int, int, Any]]:
    """(row number, rows read so far, record as a dict or a BadRecord) for each row of a Parquet file."""
    pq = _pyarrow_parquet()
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    missing = {"text_id", "vector"} - names
    if missing:
        raise TransferError(f"{path}: Parquet file lacks column(s) {', '.join(sorted(missing))}")
    columns = [c for c in ("text_id", "vector", "text", "metadata") if c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=columns):
        cols = {name: batch.column(name).to_pylist() for name in columns}
        for i in range(batch.num_rows):
            row += 1
            obj: dict[str, Any] = {"text_id": cols["text_id"][i], "vector": cols["vector"][i]}
            if "text" in cols and cols["text"][i] is not None:
                obj["text"] = cols["text"][i]
            raw_md = cols["metadata"][i] if "metadata" in cols else None
            if raw_md is not None:
                try:
                    obj["metadata"] = json.loads(raw_md) if isinstance(raw_md, str) else raw_md
                except ValueError as exc:
                    yield row, row, BadRecord(row, f"metadata is not valid JSON: {exc}")
                    continue
            yield row, row, obj


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        raise TransferError("Parquet needs pyarrow: pip install 'vdb-grpc[parquet]' (or use JSONL)") from None
    return pq


def records(source: Iterable[tuple[int, int, Any]]) -> Iterator[tuple[int, Record | BadRecord]]:
    """Checked records of a reader, all vectors held to the length of the first good one."""
    dims: int | None = None
    for _line, progress, obj in source:
        rec = obj if isinstance(obj, BadRecord) else check_record(obj, _line, dims)
        if isinstance(rec, Record) and dims is None:
            dims = len(rec.vector)
        yield progress, rec


# --- progress ---------------------------------------------------------------------------------------------------


class Progress:
    """A progress bar with rate and ETA on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, total: int | None, unit: str, out: IO[str], *, tty: bool | None = None) -> None:
        self.total = total
        self.unit = unit
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.start = time.monotonic()
        self.last = self.start  # the first line after `every` seconds: a short run prints only the final one
        self.every = 0.2 if self.tty else 10.0

    def update(self, rows: int, done: int | None = None, *, final: bool = False) -> None:
        """``rows`` processed; ``done`` of ``total`` (bytes or rows) read, for percent and ETA."""
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = rows / elapsed
        frac = (done / self.total) if (self.total and done is not None) else None
        eta = ""
        if frac is not None and 0 < frac < 1 and not final:
            eta = f"  ETA {_clock(elapsed * (1 - frac) / frac)}"
        pct = f"{100 * frac:3.0f}% " if frac is not None else ""
        text = f"{pct}{rows:,} {self.unit}  {rate:,.0f} {self.unit}/s  {_clock(elapsed)}{eta}"
        if self.tty:
            bar = ""
            if frac is not None:
                filled = int(24 * min(frac, 1.0))
                bar = "|" + "█" * filled + " " * (24 - filled) + "| "
            self.out.write("\r" + bar + text + "\x1b[K" + ("\n" if final else ""))
        else:
            self.out.write(("done: " if final else "") + text + "\n")
        self.out.flush()


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# --- import -----------------------------------------------------------------------------------------------------


def existing_text_ids(target: Target, owner: str, handle: str) -> set[str]:
    """Every text_id the project holds (ListEmbeddings pages, no vectors)."""
    from vdb_grpc.v1 import embedding_pb2 as pb
    from vdb_grpc.v1 import embedding_pb2_grpc

    have: set[str] = set()
    with target.channel() as ch:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(ch)
        token = ""
        while True:
            try:
                page = stub.ListEmbeddings(
                    pb.ListEmbeddingsRequest(owner=owner, project_handle=handle, page_size=1000, page_token=token),
                    metadata=target.metadata(),
                )
            except grpc.RpcError as exc:
                raise TransferError(
                    f"--resume cannot list {owner}/{handle} on {target.server}: {exc.code().name}: {exc.details()}"
                ) from None
            have.update(e.text_id for e in page.embeddings)
            token = page.next_page_token
            if not token:
                return have


@dataclass
class _Sender:
    """Turns checked records into stream messages, remembering which lines each in-flight batch holds."""

    owner: str
    handle: str
    batch_size: int
    skip: set[str]
    result: ImportResult
    progress: Progress | None
    lines_of_batch: deque[tuple[int, list[int]]] = field(default_factory=lambda: deque(maxlen=16))

    def messages(self, checked: Iterable[tuple[int, Record | BadRecord]]) -> Iterator[Any]:
        from vdb_grpc.v1 import embedding_pb2 as pb

        batch: list[Any] = []
        lines: list[int] = []
        size = 0
        index = 0
        for progress, rec in checked:
            if isinstance(rec, BadRecord):
                self.result.bad = rec
                break
            if rec.text_id in self.skip:
                self.result.skipped += 1
                continue
            e = pb.Embedding(text_id=rec.text_id, vector=rec.vector)
            if rec.text is not None:
                e.text = rec.text
            if rec.metadata is not None:
                e.metadata.update(rec.metadata)
            batch.append(e)
            lines.append(rec.line)
            size += 4 * len(rec.vector) + len(rec.text_id) + (len(rec.text) if rec.text else 0) + 64
            if len(batch) >= self.batch_size or size >= _MAX_BATCH_BYTES:
                yield self._message(pb, index, batch, lines)
                index += 1
                batch, lines, size = [], [], 0
            if self.progress is not None:
                self.progress.update(self.result.sent + len(batch), progress)
        if batch:
            yield self._message(pb, index, batch, lines)

    def _message(self, pb: Any, index: int, batch: list[Any], lines: list[int]) -> Any:
        self.lines_of_batch.append((index, lines))
        self.result.sent += len(batch)
        head = {"owner": self.owner, "project_handle": self.handle} if index == 0 else {}
        return pb.StreamUpsertEmbeddingsRequest(embeddings=batch, **head)

    def line_of(self, batch: int, item: int) -> int | None:
        for index, lines in self.lines_of_batch:
            if index == batch and 0 <= item < len(lines):
                return lines[item]
        return None


def import_file(
    target: Target,
    project: str,
    path: Path,
    *,
    fmt: str | None = None,
    batch_size: int = 1000,
    resume: bool = False,
    progress_out: IO[str] | None = None,
) -> ImportResult:
    """Send every record of ``path`` to ``project`` through StreamUpsertEmbeddings; see the module docstring.

    Raises:
        TransferError: the file cannot be read, or the server refused a batch (the message names the line).
    """
    from vdb_grpc.v1 import embedding_pb2_grpc

    owner, handle = parse_project(project)
    fmt = file_format(path, fmt)
    if not path.is_file():
        raise TransferError(f"{path}: no such file")
    if not 1 <= batch_size <= 5000:
        raise TransferError("--batch-size must be 1..5000 (the server's VDB_MAX_BATCH_ITEMS is 5000 by default)")
    result = ImportResult()
    skip = existing_text_ids(target, owner, handle) if resume else set()
    started = time.monotonic()
    with open(path, "rb") as stream:
        if fmt == "parquet":
            total = _pyarrow_parquet().ParquetFile(path).metadata.num_rows
            reader: Iterable[tuple[int, int, Any]] = read_parquet(path)
        else:
            total = os.fstat(stream.fileno()).st_size
            reader = read_jsonl(stream)
        progress = Progress(total, "rows", progress_out) if progress_out is not None else None
        sender = _Sender(owner, handle, batch_size, skip, result, progress)
        with target.channel() as ch:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(ch)
            try:
                resp = stub.StreamUpsertEmbeddings(sender.messages(records(reader)), metadata=target.metadata())
            except grpc.RpcError as exc:
                raise TransferError(_stream_failure(exc, sender, path)) from None
    result.batches, result.committed = resp.batches, resp.count
    result.inserted, result.replaced = resp.inserted, resp.replaced
    result.seconds = time.monotonic() - started
    if progress is not None:
        progress.update(result.sent, total if result.bad is None else None, final=True)
    return result


def _stream_failure(exc: grpc.RpcError, sender: _Sender, path: Path) -> str:
    """The server's refusal of a batch, pointing at the file's line, and what was committed before it."""
    details = exc.details() or ""
    code = exc.code().name
    where = ""
    m = _BATCH_ERROR.search(details)
    if m:
        line = sender.line_of(int(m.group(1)), int(m.group(2)))
        if line is not None:
            where = f"{path}:{line}: "
    committed = _committed(exc)
    after = (
        f"; {committed} embeddings were committed before it (rerun with --resume to continue)"
        if committed is not None
        else "; batches already committed stay stored (rerun with --resume to continue)"
    )
    if code == "UNAVAILABLE" and not m:
        return f"cannot reach the server: {details}{after}"
    return f"{where}the server refused the import ({code}): {details}{after}"


def _committed(exc: grpc.RpcError) -> int | None:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    if "committed_embeddings" in info.metadata:
                        return int(info.metadata["committed_embeddings"])
    return None


def check_file(path: Path, *, fmt: str | None = None) -> tuple[int, list[BadRecord], int]:
    """Read all of ``path`` without sending: (good records, the first bad ones, how many bad in all)."""
    fmt = file_format(path, fmt)
    good = 0
    bad: list[BadRecord] = []
    n_bad = 0
    with open(path, "rb") as stream:
        reader = read_parquet(path) if fmt == "parquet" else read_jsonl(stream)
        for _progress, rec in records(reader):
            if isinstance(rec, BadRecord):
                n_bad += 1
                if len(bad) < _MAX_LISTED:
                    bad.append(rec)
            else:
                good += 1
    return good, bad, n_bad


# --- export -----------------------------------------------------------------------------------------------------


def export_project(
    target: Target,
    project: str,
    out_path: Path | None,
    *,
    fmt: str | None = None,
    progress_out: IO[str] | None = None,
) -> int:
    """Write every embedding of ``project`` to ``out_path`` (stdout when None); return how many."""
    from vdb_grpc.limits import json_object
    from vdb_grpc.v1 import embedding_pb2 as pb
    from vdb_grpc.v1 import embedding_pb2_grpc, project_pb2, project_pb2_grpc

    owner, handle = parse_project(project)
    fmt = file_format(out_path, fmt)
    with target.channel() as ch:
        try:
            info = project_pb2_grpc.ProjectServiceStub(ch).GetProject(
                project_pb2.GetProjectRequest(owner=owner, project_handle=handle), metadata=target.metadata()
            )
        except grpc.RpcError as exc:
            raise TransferError(f"cannot read project {project}: {exc.code().name}: {exc.details()}") from None
        total = info.project.number_of_embeddings if info.project.HasField("number_of_embeddings") else None
        progress = Progress(total, "rows", progress_out) if progress_out is not None else None
        stub = embedding_pb2_grpc.EmbeddingServiceStub(ch)

        def rows() -> Iterator[dict[str, Any]]:
            token = ""
            n = 0
            while True:
                page = stub.ListEmbeddings(
                    pb.ListEmbeddingsRequest(
                        owner=owner, project_handle=handle, page_size=1000, page_token=token, include_vectors=True
                    ),
                    metadata=target.metadata(),
                )
                for e in page.embeddings:
                    # float32 arrays are written in their shortest float32 form (0.099975586, not
                    # 0.0999755859375): it reads back as the same float32, hence the same float16.
                    row: dict[str, Any] = {"text_id": e.text_id, "vector": np.array(e.vector, dtype=np.float32)}
                    if e.HasField("text"):
                        row["text"] = e.text
                    if e.HasField("metadata"):
                        row["metadata"] = json_object(e.metadata, 10_000, "metadata", finite=False)
                    yield row
                n += len(page.embeddings)
                if progress is not None:
                    progress.update(n, n)
                token = page.next_page_token
                if not token:
                    return

        try:
            if fmt == "parquet":
                if out_path is None:
                    raise TransferError("Parquet export needs --output FILE")
                count = _write_parquet(out_path, rows())
            else:
                count = _write_jsonl(out_path, rows())
        except grpc.RpcError as exc:
            raise TransferError(f"export of {project} failed: {exc.code().name}: {exc.details()}") from None
    if progress is not None:
        progress.update(count, count, final=True)
    return count


def _write_jsonl(out_path: Path | None, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    out: IO[bytes] = open(out_path, "wb") if out_path else sys.stdout.buffer
    try:
        for row in rows:
            out.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE))
            count += 1
    finally:
        if out_path:
            out.close()
        else:
            out.flush()
    return count


def _write_parquet(out_path: Path, rows: Iterator[dict[str, Any]]) -> int:
    import pyarrow as pa  # type: ignore[import-not-found, import-untyped, unused-ignore]

    pq = _pyarrow_parquet()
    schema = pa.schema(
        [("text_id", pa.string()), ("vector", pa.list_(pa.float32())), ("text", pa.string()), ("metadata", pa.string())]
    )
    count = 0
    with pq.ParquetWriter(out_path, schema) as writer:
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            cols = {
                "text_id": [r["text_id"] for r in chunk],
                "vector": [r["vector"].tolist() for r in chunk],
                "text": [r.get("text") for r in chunk],
                "metadata": [json.dumps(r["metadata"]) if "metadata" in r else None for r in chunk],
            }
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))

        for row in rows:
            chunk.append(row)
            count += 1
            if len(chunk) >= 4096:
                flush()
                chunk = []
        if chunk:
            flush()
    return count


def report_import(result: ImportResult, path: Path, out: Callable[[str], None]) -> int:
    """Print what an import did; the exit code (1 when a bad record stopped it)."""
    rate = result.committed / result.seconds if result.seconds else 0.0
    out(
        f"imported {result.committed:,} embeddings ({result.inserted:,} new, {result.replaced:,} replaced) in "
        f"{result.batches} batch{'' if result.batches == 1 else 'es'}, {result.seconds:.1f}s ({rate:,.0f}/s)"
        + (f"; skipped {result.skipped:,} already stored" if result.skipped else "")
    )
    if result.bad is not None:
        out(
            f"{path}:{result.bad.line}: {result.bad.problem}\n"
            f"stopped there: the records before line {result.bad.line} are stored, it and the ones after are "
            "not; fix the line and rerun with --resume"
        )
        return 1
    return 0
