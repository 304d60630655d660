"""Embeddings: validated atomic batch uploads, streaming bulk ingest, reading, listing and deleting (SPEC §7).

Uploads
    Every item of a batch is checked before anything is written, and every failing item is reported: one
    ``BadRequest`` field violation per problem, its field naming the item (``embeddings[3].vector``) and its
    description the text_id. Vector checks are vectorized: the batch is one float32 matrix (the API layer builds
    it when all vectors have one length), checked for length, finiteness, the float16 range and zero norm
    (after float16 rounding) in a few numpy passes. A batch is written by one ``INSERT … ON CONFLICT`` in one
    transaction — all items or none. Rows are written ``indexed = false`` so the upload never maintains an HNSW
    index (docs/embeddings-design.md); ``on_commit`` tells the background indexer after each commit (it waits
    while uploads arrive, see ``vdb_grpc.upload_pacing``).

Streaming ingest
    Each stream message is a batch committed in its own transaction, in order. Two batches are in flight: while
    batch k commits, batch k+1 is received, converted, checked and written (once k has written its rows), and
    commits only after batch k has (rolled back if k failed). Every batch is authorized again. A failing batch
    ends the stream with its error, prefixed ``batch k`` (0-based) and carrying a ``google.rpc.ErrorInfo`` that
    says how many batches and embeddings were committed before it: exactly batches 0 … k-1; batch k and anything
    the client sent after it are not stored. A stream that has sent many rows writes the rest into an index
    segment of its own instead of as unindexed rows (``vdb_grpc.domain.stream_segments``).

Lock order and conflicts
    A batch writes its rows in text_id order (``vdb_grpc.queries.embeddings``), so overlapping batches wait for
    each other instead of deadlocking; a deadlock or serialization failure that still happens is retried as a
    whole transaction (``vdb_grpc.domain.retry``) before the client sees ABORTED.

Permissions come from ``resolve_project_access`` (projects module): upload and delete need "write" (admin,
owner, editor), reading needs "read" (also readers, and anyone for public_read projects).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.auth import Principal
from vdb_grpc.db import halfvec_wire
from vdb_grpc.domain.projects import ProjectAccess, resolve_project_access
from vdb_grpc.domain.retry import retry_conflicts
from vdb_grpc.domain.stream_segments import SegmentPolicy, StreamSegment, StreamSegments
from vdb_grpc.errors import (
    ErrorInfo,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceRef,
    Unauthenticated,
    VdbError,
)
from vdb_grpc.limits import Limits, show
from vdb_grpc.metadata_schema import MetadataSchema, compile_stored_schema
from vdb_grpc.pagination import encode_token, page_request
from vdb_grpc.queries import embeddings as q
from vdb_grpc.queries.embeddings import EmbeddingRow, UpsertCounts

TEXT_ID_MAX = 1000
#: Largest finite float16 magnitude; larger values cannot be stored in a halfvec.
FLOAT16_MAX = 65504.0
#: Field violations of one refused batch are listed up to about this many bytes. They travel in a trailer, and
#: gRPC clients refuse metadata over 8 KiB by default; the rest is summarised in one last violation.
DETAILS_BUDGET = 6000
#: ListEmbeddings stops a page early rather than exceed about this many bytes: gRPC clients refuse responses
#: over 4 MiB by default (vectors of 3,072 dimensions take ~15 KB each).
LIST_PAGE_BYTES = 3 * 1024 * 1024 + 512 * 1024
#: Distinct compiled metadata schemas kept (compiling one takes milliseconds; uploads use it per batch).
SCHEMA_CACHE_SIZE = 64
SHOWN_TEXT_ID = 60
#: Metadata is stored as compact JSON; NaN and infinity are refused (JSON has no spelling for them).
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
NOTHING_STORED = "; nothing was stored"
METADATA_REQUIRED = (
    "is required: the project has a metadata_schema (only a re-upload may leave it out, keeping the stored metadata)"
)
#: Stream batches in flight at once: one being committed while the next is written (see ``Embeddings._commit``).
STREAM_DEPTH = 2
#: Resolves the caller's key again (``vdb_grpc.auth.current_reauthenticate``); raises UNAUTHENTICATED when revoked.
Reauthenticate = Callable[[], Awaitable[Principal]]
#: Batches of more items than this are checked and encoded in a worker thread, off the event loop.
OFF_LOOP_ITEMS = 32


@dataclass(frozen=True, eq=False)
class UploadBatch:
    """One batch of embeddings as a request gives it, column by column.

    Attributes:
        text_ids: The items' text_ids.
        vectors: A 2-D float32 array (one row per item) when every vector has the same length, else one 1-D
            float32 array per item.
        vector_dims: The optional vector_dim check of each item (0 = not given).
        instances: The optional instance check of each item ("" = not given).
        texts: Each item's text; None = not given (a replaced embedding keeps its stored text).
        metadata: Each item's metadata as decoded JSON; None = not given (a replaced embedding keeps its stored
            metadata).
    """

    text_ids: list[str]
    vectors: np.ndarray[Any, np.dtype[np.float32]] | list[np.ndarray[Any, np.dtype[np.float32]]]
    vector_dims: list[int]
    instances: list[str]
    texts: list[str | None]
    metadata: list[Any]

    def __len__(self) -> int:
        return len(self.text_ids)


@dataclass(frozen=True)
class StreamBatch:
    """One message of a streaming upload.

    Attributes:
        owner: Project owner; empty = as in the first message (in the first: the calling user).
        project_handle: Project handle; empty = as in the first message.
        size: Number of items (checked against the limit before ``load`` converts them).
        load: Converts the message's items into an ``UploadBatch``.
    """

    owner: str
    project_handle: str
    size: int
    load: Callable[[], UploadBatch]


@dataclass(frozen=True)
class UpsertResult:
    """Outcome of one committed batch."""

    text_ids: list[str]
    inserted: int
    replaced: int

    @property
    def count(self) -> int:
        """Embeddings stored (inserted + replaced)."""
        return self.inserted + self.replaced


@dataclass
class StreamResult:
    """What a streaming upload committed."""

    batches: int = 0
    inserted: int = 0
    replaced: int = 0

    @property
    def count(self) -> int:
        """Embeddings stored over all batches."""
        return self.inserted + self.replaced


@dataclass(frozen=True)
class EmbeddingPage:
    """One page of ListEmbeddings."""

    embeddings: list[EmbeddingRow]
    next_page_token: str


@dataclass(frozen=True)
class _Target:
    """What a batch is checked against: the project's instance (as locked for the upload) and schema."""

    project_id: int
    project: str
    owner: str
    instance_id: int
    instance: str
    dimensions: int
    schema_text: str | None


@dataclass(frozen=True, eq=False)
class _Prepared:
    """A batch that passed every check against ``target``, encoded for the upsert statement."""

    target: _Target
    text_ids: list[str]
    texts: list[str | None]
    vectors: list[bytes]
    metadata_json: str


def _show(text_id: str) -> str:
    """A text_id for messages: quoted, long ones shortened (``vdb_grpc.limits.show``)."""
    return show(text_id, SHOWN_TEXT_ID)


def check_text_id(text_id: str, field: str = "text_id") -> str:
    """A text_id addressing one embedding: 1-1000 characters, no NUL.

    Raises:
        InvalidArgument: naming ``field``.
    """
    problem = _text_id_problem(text_id)
    if problem is not None:
        raise InvalidArgument.field(field, problem)
    return text_id


def _text_id_problem(text_id: str) -> str | None:
    if not text_id:
        return "is required"
    if len(text_id) > TEXT_ID_MAX:
        return f"has {len(text_id)} characters; at most {TEXT_ID_MAX} are allowed"
    if "\x00" in text_id:
        return "must not contain NUL characters (PostgreSQL text cannot hold them)"
    return None


def _has_nul(value: Any) -> bool:
    """True when a decoded JSON value holds a NUL character in a key or string."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class _Problems:
    """Problems found in a batch, in item order, turned into one INVALID_ARGUMENT."""

    def __init__(self, text_ids: list[str]) -> None:
        self._text_ids = text_ids
        self.items: list[tuple[int, str, str]] = []

    def add(self, index: int | np.integer[Any], field: str, description: str) -> None:
        self.items.append((int(index), field, description))

    def error(self) -> InvalidArgument:
        # Stable sort: per item, problems stay in the order the checks ran.
        problems = sorted(self.items, key=lambda p: p[0])
        failing = len({p[0] for p in problems})
        violations: list[FieldViolation] = []
        budget = DETAILS_BUDGET
        for index, field, description in problems:
            v = FieldViolation(
                f"embeddings[{index}].{field}", f"text_id {_show(self._text_ids[index])}: {field} {description}"
            )
            budget -= len(v.field) + len(v.description) + 8
            if budget < 0:
                break
            violations.append(v)
        if len(violations) < len(problems):
            rest = problems[len(violations) :]
            violations.append(
                FieldViolation(
                    "embeddings",
                    f"{len(rest)} more problem(s) in {len({p[0] for p in rest})} more item(s), from "
                    f"embeddings[{rest[0][0]}] on, are not listed (error details are kept short)",
                )
            )
        index, field, description = problems[0]
        message = f"embeddings[{index}] (text_id {_show(self._text_ids[index])}): {field} {description}"
        if len(problems) > 1:
            message += f"; {len(problems)} problems in {failing} item(s) in all (see the BadRequest details)"
        return InvalidArgument(message + NOTHING_STORED, field_violations=violations)


def _check_vectors(batch: UploadBatch, dims: int, instance: str, problems: _Problems) -> np.ndarray[Any, Any]:
    """Check every vector; return the batch as a float16 matrix (meaningful only when nothing failed)."""
    n = len(batch)
    vectors = batch.vectors
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        lengths = np.full(n, vectors.shape[1], dtype=np.int64)
    else:
        lengths = np.fromiter((len(v) for v in vectors), dtype=np.int64, count=n)
    for i in np.flatnonzero(lengths != dims):
        problems.add(
            i,
            "vector",
            "is required"
            if lengths[i] == 0
            else f"has {lengths[i]} values but the project's instance {instance} has {dims} dimensions",
        )
    given = np.asarray(batch.vector_dims, dtype=np.int64)
    for i in np.flatnonzero((given != 0) & (given != lengths)):
        problems.add(i, "vector_dim", f"is {given[i]} but the vector has {lengths[i]} values")

    rows = np.flatnonzero(lengths == dims)
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        matrix = vectors if len(rows) == n else vectors[rows]
    elif len(rows):
        matrix = np.stack([vectors[i] for i in rows])
    else:
        matrix = np.empty((0, dims), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        in_range = np.asarray((np.abs(matrix) <= FLOAT16_MAX).all(axis=1))  # False for NaN and infinity too
        half = matrix.astype(np.float16)
    nonzero = half.any(axis=1)
    for b in np.flatnonzero(~(in_range & nonzero)):
        i, row = rows[b], matrix[b]
        if not in_range[b]:
            pos = int(np.flatnonzero(~np.isfinite(row))[0]) if not np.isfinite(row).all() else -1
            if pos >= 0:
                problems.add(i, "vector", f"value at position {pos} is {row[pos]}: only finite values are allowed")
            else:
                pos = int(np.flatnonzero(np.abs(row) > FLOAT16_MAX)[0])
                problems.add(
                    i,
                    "vector",
                    f"value at position {pos} is {float(row[pos]):g}, outside the float16 range "
                    f"(|x| <= {FLOAT16_MAX:g})",
                )
        else:
            problems.add(i, "vector", "is the zero vector (after rounding to float16): it has no direction to compare")
    return half


def _check_metadata(
    batch: UploadBatch,
    schema: MetadataSchema | None,
    problems: _Problems,
    limits: Limits,
    stored: frozenset[str] | None = None,
) -> str:
    """Check every item's metadata; return the batch's metadata as one JSON array (null where not given).

    ``stored``: the batch's text_ids already stored in the project (None: unknown, taken as none). Left-out
    metadata keeps a stored row's value, which satisfies the schema; for a new row it is refused.

    Each item is encoded once (its size is checked against ``VDB_MAX_METADATA_BYTES``), the array is joined from
    the pieces; the per-item work beyond that is the schema check, when there is a schema.
    """
    values = batch.metadata
    unusable: set[int] = set()
    limit = limits.metadata_bytes

    def bad(i: int, description: str) -> None:
        unusable.add(i)
        problems.add(i, "metadata", description)

    parts: list[str] = []
    for i, value in enumerate(values):
        if value is None:
            parts.append("null")
            if schema is not None and (stored is None or batch.text_ids[i] not in stored):
                bad(i, METADATA_REQUIRED)
            continue
        if not isinstance(value, dict):
            bad(i, f"must be a JSON object, not {type(value).__name__}")
        try:
            part = _JSON.encode(value)
        except ValueError:
            bad(i, "holds NaN or infinity, which JSON cannot represent")
            parts.append("null")
            continue
        parts.append(part)
        if len(part) > limit // 4 and len(part.encode("utf-8")) > limit:  # UTF-8 takes at most 4 bytes a char
            bad(
                i,
                f"has {len(part.encode('utf-8')):,} bytes as JSON, more than the limit of {limit:,} "
                "(VDB_MAX_METADATA_BYTES)",
            )
        elif "\\u0000" in part and _has_nul(value):
            bad(i, "must not contain NUL characters (PostgreSQL's jsonb cannot hold them)")
    if schema is not None:
        for i, value in enumerate(values):
            if i not in unusable and value is not None:
                violation = schema.violation(value)
                if violation is not None:
                    problems.add(
                        i,
                        "metadata",
                        f"does not match the project's metadata_schema at {violation.path}: {violation.message}",
                    )
    return "[" + ",".join(parts) + "]"


def prepare_batch(
    batch: UploadBatch,
    target: _Target,
    schema: MetadataSchema | None,
    limits: Limits | None = None,
    stored: frozenset[str] | None = None,
) -> _Prepared:
    """Check every item of ``batch`` against ``target`` and encode it for the upsert.

    ``stored``: which of the batch's text_ids the project already holds, when known (see ``_check_metadata``).

    Raises:
        InvalidArgument: one or more items fail; every problem of every item is listed (see ``_Problems``).
    """
    limits = limits or Limits()
    problems = _Problems(batch.text_ids)
    first_at: dict[str, int] = {}
    for i, text_id in enumerate(batch.text_ids):
        problem = _text_id_problem(text_id)
        if problem is not None:
            problems.add(i, "text_id", problem)
        j = first_at.setdefault(text_id, i)
        if j != i:
            problems.add(i, "text_id", f"occurs more than once in the batch (first at embeddings[{j}])")
    half = _check_vectors(batch, target.dimensions, target.instance, problems)
    for i, ref in enumerate(batch.instances):
        if ref and (ref if "/" in ref else f"{target.owner}/{ref}") != target.instance:
            problems.add(i, "instance", f"names {show(ref)}, but the project's instance is {target.instance!r}")
    for i, text in enumerate(batch.texts):
        if text is not None and "\x00" in text:
            problems.add(i, "text", "must not contain NUL characters (PostgreSQL text cannot hold them)")
        elif text is not None and len(text) > limits.text_chars:
            problems.add(
                i,
                "text",
                f"has {len(text):,} characters, more than the limit of {limits.text_chars:,} (VDB_MAX_TEXT_CHARS)",
            )
    metadata_json = _check_metadata(batch, schema, problems, limits, stored)
    if problems.items:
        raise problems.error()
    return _Prepared(
        target=target,
        text_ids=batch.text_ids,
        texts=batch.texts,
        vectors=halfvec_wire(half) if len(batch) else [],
        metadata_json=metadata_json,
    )


def _new_without_metadata(text_ids: list[str], missing: tuple[str, ...]) -> InvalidArgument:
    """The refusal of new embeddings sent without metadata to a project with a metadata_schema."""
    problems = _Problems(text_ids)
    wanted = set(missing)
    for i, text_id in enumerate(text_ids):
        if text_id in wanted:
            problems.add(i, "metadata", METADATA_REQUIRED)
    return problems.error()


@dataclass(frozen=True, eq=False)
class _Previous:
    """A stream batch in flight: its commit task, and an event set once it has written its rows (or ended)."""

    task: asyncio.Task[tuple[UpsertResult, _Target]]
    written: asyncio.Event


class _Abandoned(Exception):
    """A streamed batch rolled back because an earlier batch of the stream failed (never reaches a client)."""


def _in_stream(exc: VdbError, batch: int, done: StreamResult) -> VdbError:
    """``exc`` of one stream message, restated with the batch number and what was committed before it."""
    if batch == 0:
        committed = "nothing was committed"
    elif batch == 1:
        committed = f"batch 0 ({done.count} embeddings) was committed"
    else:
        committed = f"batches 0-{batch - 1} ({done.count} embeddings) were committed"
    return type(exc)(
        f"batch {batch}: {exc.message.removesuffix(NOTHING_STORED)}; {committed}, batch {batch} and any later "
        "ones were not",
        field_violations=exc.field_violations,
        preconditions=exc.preconditions,
        resource=exc.resource,
        retry_after_seconds=exc.retry_after_seconds,
        info=ErrorInfo(
            "STREAM_BATCH_FAILED",
            (
                ("failed_batch", str(batch)),
                ("committed_batches", str(done.batches)),
                ("committed_embeddings", str(done.count)),
                ("committed_inserted", str(done.inserted)),
                ("committed_replaced", str(done.replaced)),
            ),
        ),
    )


class Embeddings:
    """Use cases of EmbeddingService (except SearchSimilar, see ``vdb_grpc.domain.search``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch_items: int,
        on_commit: Callable[[], None] | None = None,
        limits: Limits | None = None,
        stream_segments: SegmentPolicy | None = None,
        on_index_due: Callable[[], None] | None = None,
    ) -> None:
        """Args:
        pool: database pool.
        max_batch_items: most items per upload request or stream message (``VDB_MAX_BATCH_ITEMS``).
        on_commit: called after each committed upload (wakes the background indexer).
        limits: per-item limits of metadata and text, and of stored schemas (``vdb_grpc.limits``).
        stream_segments: when streams write into index segments of their own (None: never).
        on_index_due: called when a stream has closed such a segment, or grown its open one to
            ``interim_rows`` (its interim index can be built now).
        """
        self._limits = limits or Limits()
        self._pool = pool
        self._max_batch_items = max_batch_items
        self._on_commit = on_commit
        self._stream_segments = stream_segments or SegmentPolicy()
        self._on_index_due = on_index_due
        self._schemas: dict[str, MetadataSchema] = {}

    def check_batch_size(self, n: int, field: str = "embeddings") -> None:
        """Refuse a batch over ``VDB_MAX_BATCH_ITEMS`` (before converting it).

        Raises:
            InvalidArgument: naming the limit and the setting.
        """
        if n > self._max_batch_items:
            raise InvalidArgument.field(
                field,
                f"{n} items exceed the limit of {self._max_batch_items} per request "
                "(VDB_MAX_BATCH_ITEMS); split the batch or use StreamUpsertEmbeddings",
            )

    async def check_items(
        self, access: ProjectAccess, batch: UploadBatch, stored: frozenset[str] | None = None
    ) -> None:
        """Every check ``upsert`` makes of ``batch`` for the project of ``access``, without writing anything
        (server-side embedding refuses a bad batch before paying the provider for its vectors).

        ``stored``: which of the batch's text_ids the project already holds (a re-upload may leave out metadata).

        Raises:
            InvalidArgument, FailedPrecondition: as ``upsert``.
        """
        await self._prepare_off_loop(batch, self._target(access), stored)

    def _schema(self, text: str | None) -> MetadataSchema | None:
        if not text:
            return None
        schema = self._schemas.get(text)
        if schema is None:
            schema = compile_stored_schema(text, self._limits)
            if len(self._schemas) >= SCHEMA_CACHE_SIZE:
                self._schemas.clear()
            if schema is not None:
                self._schemas[text] = schema
        return schema

    @staticmethod
    def _target(access: ProjectAccess) -> _Target:
        """What a batch is checked against; ``access`` was resolved with lock="share", which also locks the
        instance row, so its dimensions cannot change before the upload commits."""
        instance_id, dimensions = access.require_instance()
        assert access.instance is not None
        return _Target(
            project_id=access.project_id,
            project=access.name,
            owner=access.owner,
            instance_id=instance_id,
            instance=access.instance,
            dimensions=dimensions,
            schema_text=access.metadata_schema or None,
        )

    def _prepare(self, batch: UploadBatch, target: _Target, stored: frozenset[str] | None = None) -> _Prepared:
        return prepare_batch(batch, target, self._schema(target.schema_text), self._limits, stored)

    async def _prepare_off_loop(
        self, batch: UploadBatch, target: _Target, stored: frozenset[str] | None = None
    ) -> _Prepared:
        """``_prepare``, in a worker thread for a large batch (schema validation and JSON encoding)."""
        if len(batch) > OFF_LOOP_ITEMS:
            return await asyncio.to_thread(self._prepare, batch, target, stored)
        return self._prepare(batch, target, stored)

    async def _commit(
        self,
        principal: Principal,
        owner: str,
        project_handle: str,
        batch: UploadBatch,
        prepared: _Prepared | None,
        after: _Previous | None = None,
        reauthenticate: Reauthenticate | None = None,
        written: asyncio.Event | None = None,
        segment: StreamSegment | None = None,
    ) -> tuple[UpsertResult, _Target]:
        """Authorize, check and store one batch atomically; retry the whole transaction after a conflict.

        With ``reauthenticate`` (batches of a stream after the first) the caller's key is resolved again first:
        a key rotated or a user deleted since the stream began stops it here. A deadlock or serialization
        failure (rare: rows are written in text_id order, see ``vdb_grpc.queries.embeddings``) rolls the attempt
        back and runs it again (``retry_conflicts``), so only the committed attempt's counts are returned.

        ``after`` and ``written``: see ``_commit_once``; ``written`` is set however this ends, so the next batch
        never waits for a batch that failed. ``segment``: the stream's segment this batch writes into.
        """
        try:
            if after is not None:
                # Take no lock before the previous batch has taken all of its own (see _commit_once).
                await after.written.wait()
            if reauthenticate is not None:
                again = await reauthenticate()
                if again != principal:  # pragma: no cover - a key hash belongs to one user
                    raise Unauthenticated("the API key no longer belongs to the caller that opened the stream")

            async def attempt() -> tuple[UpsertResult, _Target]:
                return await self._commit_once(
                    principal, owner, project_handle, batch, prepared, after, written, segment
                )

            return await retry_conflicts(attempt, f"upload to {owner}/{project_handle}")
        finally:
            if written is not None:
                written.set()

    async def _commit_once(
        self,
        principal: Principal,
        owner: str,
        project_handle: str,
        batch: UploadBatch,
        prepared: _Prepared | None,
        after: _Previous | None,
        written: asyncio.Event | None,
        segment: StreamSegment | None = None,
    ) -> tuple[UpsertResult, _Target]:
        """One attempt of ``_commit``: check (unless ``prepared`` was checked against the same target) and store.

        With ``after`` (the previous batch of a stream) the batch is written once ``after`` has written its rows
        (``written``), but committed only once ``after`` has committed, and rolled back if it failed: streamed
        batches commit strictly in order, while one batch's writing overlaps the previous one's commit (its WAL
        flush). Starting only after the previous batch's writes keeps the wait deadlock-free: a batch that holds
        locks and waits for its predecessor waits for a transaction that only commits and waits for no lock
        itself, so no cycle can run through this wait, which PostgreSQL cannot see.

        With ``segment`` the rows are written indexed in that segment (if this transaction sees the dimensions it
        was opened for) and the segment's lease is renewed after them: that row lock is the one lock a batch may
        wait for that its predecessor holds, and the predecessor only commits.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_project_access(conn, principal, owner, project_handle, "write", lock="share")
            target = self._target(access)
            stored: frozenset[str] | None = None
            if target.schema_text:
                left_out = [t for t, m in zip(batch.text_ids, batch.metadata, strict=True) if m is None]
                if left_out:  # which of them are re-uploads (they keep their metadata) is known only here
                    stored = frozenset(await q.stored_text_ids(conn, target.project_id, left_out))
                    prepared = None
            if prepared is None or prepared.target != target:
                prepared = await self._prepare_off_loop(batch, target, stored)
            counts = UpsertCounts(0, 0)
            label = None
            if segment is not None and not segment.gone and segment.dim == target.dimensions:
                label = segment.label
            if prepared.text_ids:
                counts = await q.upsert_embeddings(
                    conn,
                    owner=target.owner,
                    project_id=target.project_id,
                    instance_id=target.instance_id,
                    dimensions=target.dimensions,
                    text_ids=prepared.text_ids,
                    texts=prepared.texts,
                    vectors=prepared.vectors,
                    metadata_json=prepared.metadata_json,
                    segment=label,
                )
                if label is not None and segment is not None:
                    lease = self._stream_segments.lease_seconds
                    if not await q.renew_segment(conn, label, len(prepared.text_ids), lease):
                        segment.gone = True  # handed back by the indexer: these rows are backlog like any upload
                        await q.unindex_rows(conn, target.project_id, prepared.text_ids)
            if counts.new_without_metadata and target.schema_text:
                # a row deleted since stored_text_ids was read: refused all the same, rolled back
                raise _new_without_metadata(prepared.text_ids, counts.new_without_metadata)
            if written is not None:
                written.set()
            if after is not None:
                try:
                    await asyncio.shield(after.task)
                except Exception:
                    raise _Abandoned from None
        if counts.inserted or counts.replaced:
            if self._on_commit is not None:
                self._on_commit()
        return UpsertResult(prepared.text_ids, counts.inserted, counts.replaced), target

    async def upsert(self, principal: Principal, owner: str, project_handle: str, batch: UploadBatch) -> UpsertResult:
        """Insert or replace a batch atomically (UpsertEmbeddings).

        Raises:
            InvalidArgument: the batch is too large or items fail their checks (all listed; nothing stored).
            FailedPrecondition: the project has no instance, or its stored metadata_schema is unusable.
            Unauthenticated, PermissionDenied, NotFound: see ``resolve_project_access`` ("write").
        """
        self.check_batch_size(len(batch))
        result, _ = await self._commit(principal, owner, project_handle, batch, None)
        return result

    async def upsert_stream(
        self,
        principal: Principal,
        messages: AsyncIterator[StreamBatch],
        *,
        reauthenticate: Reauthenticate | None = None,
    ) -> StreamResult:
        """Commit each streamed batch in its own transaction, in order (StreamUpsertEmbeddings).

        Every batch is authorized again: its transaction resolves the project access anew (an unshared project
        or a share made read-only stops the stream), and from the second batch on ``reauthenticate`` (the
        interceptor's ``vdb_grpc.auth.current_reauthenticate``) resolves the caller's key again, through the
        generation-coherent key cache, so a rotated key or a deleted user stops it too.

        Raises:
            VdbError: the first failing batch's error, restated by ``_in_stream``; batches before it stay
                committed.
        """
        done = StreamResult()
        project: tuple[str, str] | None = None
        target: _Target | None = None
        in_flight: deque[tuple[int, _Previous]] = deque()
        index = 0
        segments = StreamSegments(self._pool, self._stream_segments, self._on_index_due)

        async def finish_oldest() -> _Target:
            batch_no, previous = in_flight.popleft()
            try:
                result, used = await previous.task
            except VdbError as exc:
                raise _in_stream(exc, batch_no, done) from None
            done.batches += 1
            done.inserted += result.inserted
            done.replaced += result.replaced
            await segments.committed(batch_no)
            return used

        try:
            async for message in messages:
                error: VdbError | None = None
                batch: UploadBatch | None = None
                try:
                    named = (message.owner, message.project_handle)
                    if project is None:
                        project = (message.owner or principal.user_handle or "", message.project_handle)
                    elif any(given and given != first for given, first in zip(named, project, strict=True)):
                        raise InvalidArgument.field(
                            "owner" if message.owner and message.owner != project[0] else "project_handle",
                            f"must be empty or the same as in the first message ({project[0]}/{project[1]})",
                        )
                    self.check_batch_size(message.size)
                    batch = await asyncio.to_thread(message.load)  # while earlier batches are being written
                except VdbError as exc:
                    error = exc
                while in_flight and (error is not None or len(in_flight) >= STREAM_DEPTH):
                    target = await finish_oldest()
                if error is not None:
                    raise _in_stream(error, index, done)
                assert project is not None and batch is not None
                prepared: _Prepared | None = None
                if target is not None:
                    # Checked here, while the previous batch is being written. The commit re-checks only if the
                    # project changed meanwhile, and reports a failure then, in stream order.
                    with contextlib.suppress(InvalidArgument):
                        prepared = await self._prepare_off_loop(batch, target)
                after = in_flight[-1][1] if in_flight else None
                again = reauthenticate if index > 0 else None  # the interceptor has just authenticated batch 0
                written = asyncio.Event()
                segment = await segments.for_batch(
                    index, len(batch), *((target.project_id, target.dimensions) if target else (None, None))
                )
                task = asyncio.create_task(
                    self._commit(principal, *project, batch, prepared, after, again, written, segment)
                )
                in_flight.append((index, _Previous(task, written)))
                index += 1
            while in_flight:
                await finish_oldest()
            await segments.close_all()
        finally:
            for _, previous in in_flight:
                previous.task.cancel()
            for _, previous in in_flight:
                with contextlib.suppress(BaseException):
                    await previous.task
            segments.close_all_later()  # a stream cut short (on success: nothing is left to close)
        return done

    async def get(self, principal: Principal, owner: str, project_handle: str, text_id: str) -> EmbeddingRow:
        """One embedding with its vector (float16-rounded).

        Raises:
            InvalidArgument: malformed text_id or handles.
            NotFound: the text_id is absent (for callers who may read the project).
            Unauthenticated, PermissionDenied: see ``resolve_project_access`` ("read").
        """
        check_text_id(text_id)
        async with self._pool.acquire() as conn:
            access = await resolve_project_access(conn, principal, owner, project_handle, "read")
            row = await q.get_embedding(conn, access.project_id, text_id)
        if row is None:
            raise _missing(access, text_id)
        return row

    async def list(
        self,
        principal: Principal,
        owner: str,
        project_handle: str,
        page_size: int,
        page_token: str,
        *,
        include_vectors: bool = False,
    ) -> EmbeddingPage:
        """A page of a project's embeddings ordered by text_id; vectors only with ``include_vectors``.

        A page may hold fewer than ``page_size`` items (but at least one) so that the response stays under
        ``LIST_PAGE_BYTES``; ``next_page_token`` continues after the last one returned.
        """
        page = page_request("embeddings", page_size, page_token)
        after = str(page.after[0]) if page.after else None
        async with self._pool.acquire() as conn:
            access = await resolve_project_access(conn, principal, owner, project_handle, "read")
            rows = await q.list_embeddings(conn, access.project_id, after, page.size + 1, with_vectors=include_vectors)
        taken: list[EmbeddingRow] = []
        size = 0
        for row in rows[: page.size]:
            size += 32 + 2 * len(row.text_id) + len(row.text or "") + row.metadata_json_size
            size += 5 * row.vector_dim if row.vector is not None else 0
            if taken and size > LIST_PAGE_BYTES:
                break
            taken.append(row)
        more = len(rows) > len(taken)
        return EmbeddingPage(taken, encode_token("embeddings", [taken[-1].text_id]) if more else "")

    async def delete(self, principal: Principal, owner: str, project_handle: str, text_id: str) -> None:
        """Delete one embedding.

        Raises:
            NotFound: the text_id is absent (for callers who may write the project).
            Unauthenticated, PermissionDenied: see ``resolve_project_access`` ("write").
        """
        check_text_id(text_id)
        async with self._pool.acquire() as conn:
            access = await resolve_project_access(conn, principal, owner, project_handle, "write")
            if not await q.delete_embedding(conn, access.project_id, text_id):
                raise _missing(access, text_id)

    async def delete_all(self, principal: Principal, owner: str, project_handle: str) -> int:
        """Delete every embedding of a project; return how many there were.

        The project row is locked FOR UPDATE first: uploads (which lock it FOR SHARE before any embedding row)
        wait for the delete, or it for them, instead of meeting it row by row in another order.
        """

        async def attempt() -> int:
            async with self._pool.acquire() as conn, conn.transaction():
                access = await resolve_project_access(conn, principal, owner, project_handle, "write", lock="update")
                return await q.delete_all_embeddings(conn, access.project_id)

        return await retry_conflicts(attempt, f"delete the embeddings of {owner}/{project_handle}")


def _missing(access: ProjectAccess, text_id: str) -> NotFound:
    return NotFound(
        f"embedding {_show(text_id)} not found in project {access.name!r}",
        resource=ResourceRef("embedding", text_id, access.owner),
    )
