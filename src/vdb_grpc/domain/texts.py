"""Server-side embedding: texts in, vectors out, through the instance's provider and its encrypted key.

EmbedTexts embeds and returns; UpsertTexts and StreamUpsertTexts embed with the project's instance and store
through ``Embeddings`` (the same checks, atomicity and stream prefix-commit semantics as UpsertEmbeddings and
StreamUpsertEmbeddings: this module only adds the vectors); text search embeds the query text and runs
``Search``.

Before any provider call a batch gets every check an upload would make (``Embeddings.check_items`` with
placeholder vectors), plus: a text is required, and a text longer than ``TEXT_BYTES_PER_TOKEN`` UTF-8 bytes
per token of the instance's ``context_limit`` is refused (a cheap, conservative estimate: no tokenizer puts
more bytes into one token of ordinary text, so nothing that fits is refused; longer texts that still do not
fit are refused by the provider, and named).

Reuse ("an item whose stored text and instance are unchanged reuses its stored vector")
    After a batch commits, UpsertTexts records for each row a digest: SHA-256 over the instance's fingerprint
    (id, endpoint, request shape, model, dimensions: ``ProviderTarget.fingerprint``), the text and the stored
    float16 vector. A later UpsertTexts recomputes it from the stored row and the instance as it is now; only
    when they match is the stored vector reused (no provider call). Any change makes it differ without anyone
    having to clear it: a new text, an edited instance (model, endpoint, dimensions), another instance bound
    to the project, a vector replaced by UpsertEmbeddings. Writing the digest after the commit (its own small
    statement) leaves the upload path of ``Embeddings`` untouched; if that write is lost, the next upload pays
    for one embedding again, nothing worse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.auth import Principal
from vdb_grpc.domain.embeddings import STREAM_DEPTH, Embeddings, StreamBatch, StreamResult, UploadBatch, UpsertResult
from vdb_grpc.domain.llm import resolve_owner
from vdb_grpc.domain.projects import ProjectAccess, resolve_project_access
from vdb_grpc.domain.search import Search, SearchQuery, SearchResult, validate
from vdb_grpc.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    Unauthenticated,
    VdbError,
)
from vdb_grpc.providers import ProviderClient, ProviderTarget, TextTooLong
from vdb_grpc.queries import embeddings as embedding_queries
from vdb_grpc.queries import texts as q
from vdb_grpc.validation import check_handle

log = logging.getLogger(__name__)

#: A text of more UTF-8 bytes than this per token of the instance's context_limit cannot fit (see module doc).
TEXT_BYTES_PER_TOKEN = 32
SHOWN_TEXT_ID = 60
NOTHING_STORED = "; nothing was stored"
#: Batches of a stream embedded ahead of the one being written, per provider request slot.
READ_AHEAD_PER_SLOT = 2


@dataclass(frozen=True)
class TextBatch:
    """Items of an UpsertTexts request (or one stream message), column by column; metadata None = not given."""

    text_ids: list[str]
    texts: list[str]
    metadata: list[Any]

    def __len__(self) -> int:
        return len(self.text_ids)


@dataclass(frozen=True)
class TextStreamMessage:
    """One message of StreamUpsertTexts (``load`` converts its items, called only when the batch is used)."""

    owner: str
    project_handle: str
    size: int
    items: TextBatch


@dataclass(frozen=True)
class TextUpsertResult:
    """What UpsertTexts stored and how many items reused their stored vector."""

    result: UpsertResult
    reused: int


@dataclass(frozen=True)
class TextStreamResult:
    """What StreamUpsertTexts committed."""

    result: StreamResult
    reused: int


@dataclass(frozen=True, eq=False)
class _Embedded:
    """A batch with its vectors, ready for ``Embeddings``, and the digests to record once it is committed."""

    batch: UploadBatch
    project_id: int
    digests: list[bytes]
    reused: int


def _show(text_id: str) -> str:
    return repr(text_id if len(text_id) <= SHOWN_TEXT_ID else text_id[: SHOWN_TEXT_ID - 1] + "…")


def digest(fingerprint: bytes, text: str, vector: np.ndarray[Any, Any]) -> bytes:
    """What proves a stored vector is this instance's embedding of this text (see the module docstring)."""
    h = hashlib.sha256(fingerprint)
    h.update(text.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(np.asarray(vector, dtype=np.float32).astype("<f2").tobytes())
    return h.digest()[:16]


def _as_items(exc: VdbError, field: str = "items") -> VdbError:
    """An upload error restated for text items: "embeddings[3].metadata" → "items[3].metadata"."""
    if not isinstance(exc, InvalidArgument) or not any(v.field.startswith("embeddings") for v in exc.field_violations):
        return exc
    return type(exc)(
        exc.message.replace("embeddings[", f"{field}["),
        field_violations=[
            FieldViolation(
                v.field.replace("embeddings", field, 1) if v.field.startswith("embeddings") else v.field, v.description
            )
            for v in exc.field_violations
        ],
        preconditions=exc.preconditions,
        resource=exc.resource,
        info=exc.info,
        retry_after_seconds=exc.retry_after_seconds,
    )


def _check_texts(texts: list[str], text_ids: list[str] | None, target: ProviderTarget, field: str) -> None:
    """A text is required, without NUL, and not certainly longer than the instance's context_limit.

    Raises:
        InvalidArgument: every failing text listed, named by its text_id where there is one.
    """
    limit = target.context_limit * TEXT_BYTES_PER_TOKEN
    violations: list[FieldViolation] = []
    for i, text in enumerate(texts):
        name = f"{field}[{i}].text" if text_ids is not None else f"{field}[{i}]"
        who = f"text_id {_show(text_ids[i])}: " if text_ids is not None else ""
        if not text:
            violations.append(FieldViolation(name, f"{who}text is required (it is what gets embedded)"))
        elif "\x00" in text:
            violations.append(FieldViolation(name, f"{who}text must not contain NUL characters"))
        elif len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit:
            violations.append(
                FieldViolation(
                    name,
                    f"{who}text is too long for instance {target.instance}: its context_limit is "
                    f"{target.context_limit} tokens (more than {TEXT_BYTES_PER_TOKEN} bytes per token cannot fit); "
                    "split it",
                )
            )
    if violations:
        first = violations[0]
        more = f"; {len(violations)} problems in all (see the BadRequest details)" if len(violations) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}{NOTHING_STORED}", field_violations=violations)


def _merged(text_error: InvalidArgument | None, upload_error: VdbError) -> VdbError:
    """One error listing the text problems and the upload checks' problems of a batch, in item order."""
    if text_error is None:
        return upload_error

    def item(v: FieldViolation) -> int:
        m = re.match(r"items\[(\d+)\]", v.field)
        return int(m.group(1)) if m else 1 << 30

    violations = sorted([*text_error.field_violations, *upload_error.field_violations], key=item)
    first = violations[0]
    return InvalidArgument(
        f"{first.field}: {first.description}; {len(violations)} problems in all (see the BadRequest details)"
        + NOTHING_STORED,
        field_violations=violations,
    )


def _too_long(exc: TextTooLong, text_ids: list[str] | None, field: str) -> InvalidArgument:
    """The provider's too-long refusal, naming the text."""
    name = f"{field}[{exc.index}].text" if text_ids is not None else f"{field}[{exc.index}]"
    who = f"text_id {_show(text_ids[exc.index])}: " if text_ids is not None else ""
    return InvalidArgument(
        f"{name}: {who}{exc.message}{NOTHING_STORED}", field_violations=[FieldViolation(name, f"{who}{exc.message}")]
    )


class _QueryCache:
    """Recent query texts' vectors, per instance fingerprint, for a short time; bounded, least recent dropped."""

    def __init__(self, size: int, seconds: float) -> None:
        self._size = size
        self._seconds = seconds
        self._entries: OrderedDict[tuple[bytes, str], tuple[float, np.ndarray[Any, Any]]] = OrderedDict()

    def get(self, key: tuple[bytes, str]) -> np.ndarray[Any, Any] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: tuple[bytes, str], vector: np.ndarray[Any, Any]) -> None:
        if self._size <= 0 or self._seconds <= 0:
            return
        self._entries[key] = (time.monotonic() + self._seconds, vector)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class Texts:
    """Use cases of EmbedTexts, UpsertTexts, StreamUpsertTexts and SearchSimilar's ``text`` query."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        embeddings: Embeddings,
        search: Search,
        providers: ProviderClient,
        *,
        query_cache_size: int = 1000,
        query_cache_seconds: float = 60.0,
    ) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self._search = search
        self._providers = providers
        self._query_cache = _QueryCache(query_cache_size, query_cache_seconds)

    # --- EmbedTexts -------------------------------------------------------------------------------------------

    async def embed(
        self, principal: Principal, instance: str, texts: list[str], deadline: float | None
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Embed ``texts`` (document form) with ``instance`` ("owner/handle" or the caller's bare handle).

        Raises:
            InvalidArgument: malformed reference, too many or bad texts, a text the provider finds too long.
            PermissionDenied: the instance is not the caller's nor shared with them.
            NotFound: absent (for the admin and the named owner).
            FailedPrecondition, ResourceExhausted, Unavailable: see ``vdb_grpc.providers.client``.
        """
        self._embeddings.check_batch_size(len(texts), "texts")
        if not instance:
            raise InvalidArgument.field("instance", "is required: write owner/instance_handle or instance_handle")
        owner, sep, handle = instance.rpartition("/")
        owner = resolve_owner(principal, owner if sep else "", "instance")
        check_handle(handle, "instance")
        name = f"{owner}/{handle}"
        async with self._pool.acquire() as conn:
            found = await q.provider_target_by_name(conn, owner, handle, principal.user_handle)
        privileged = principal.is_admin or principal.is_user(owner)
        if found is None and privileged:
            raise NotFound.resource_missing("instance", name, owner)
        if found is None or (not privileged and found[1] is None):
            raise PermissionDenied(f"instance {name} is not shared with you")
        target = found[0]
        if not texts:
            return np.empty((0, target.dimensions), dtype=np.float32)
        _check_texts(texts, None, target, "texts")
        try:
            return await self._providers.embed(target, texts, "document", deadline)
        except TextTooLong as exc:
            raise _too_long(exc, None, "texts") from None

    # --- UpsertTexts ------------------------------------------------------------------------------------------

    async def upsert(
        self, principal: Principal, owner: str, project_handle: str, items: TextBatch, deadline: float | None
    ) -> TextUpsertResult:
        """Embed the items the project's instance has not embedded yet, then store all like UpsertEmbeddings.

        Raises:
            InvalidArgument: bad items (all listed, fields "items[i]…"), a text the provider finds too long.
            FailedPrecondition, ResourceExhausted, Unavailable: the project has no instance, or the provider
                failed (nothing stored).
            Unauthenticated, PermissionDenied, NotFound: see ``resolve_project_access`` ("write").
        """
        self._embeddings.check_batch_size(len(items), "items")
        embedded = await self._embed_batch(principal, owner, project_handle, items, deadline)
        try:
            result = await self._embeddings.upsert(principal, owner, project_handle, embedded.batch)
        except VdbError as exc:
            raise _as_items(exc) from None
        await self._record_digests([embedded])
        return TextUpsertResult(result, embedded.reused)

    async def _embed_batch(
        self, principal: Principal, owner: str, project_handle: str, items: TextBatch, deadline: float | None
    ) -> _Embedded:
        """Check ``items`` like an upload, then give each a vector (reused or from the provider)."""
        async with self._pool.acquire() as conn:
            access = await resolve_project_access(conn, principal, owner, project_handle, "write")
            target = await self._project_target(conn, access)
            n, dims = len(items), target.dimensions
            text_error: InvalidArgument | None = None
            try:
                _check_texts(items.texts, items.text_ids, target, "items")
            except InvalidArgument as exc:
                text_error = exc
            left_out = [t for t, m in zip(items.text_ids, items.metadata, strict=True) if m is None]
            present = await embedding_queries.stored_text_ids(conn, access.project_id, left_out) if left_out else []
            try:
                await self._embeddings.check_items(
                    access, self._upload(items, np.ones((n, dims), np.float32), target), frozenset(present)
                )
            except InvalidArgument as exc:
                raise _merged(text_error, _as_items(exc)) from None
            except VdbError as exc:
                raise _as_items(exc) from None
            if text_error is not None:
                raise text_error
            stored = await q.stored_texts(conn, access.project_id, items.text_ids) if n else {}
        fingerprint = target.fingerprint()
        vectors = np.empty((n, dims), dtype=np.float32)
        missing: list[int] = []
        for i, (text_id, text) in enumerate(zip(items.text_ids, items.texts, strict=True)):
            row = stored.get(text_id)
            if (
                row is not None
                and row.text == text
                and len(row.vector) == dims
                and digest(fingerprint, text, row.vector) == row.digest
            ):
                vectors[i] = row.vector
            else:
                missing.append(i)
        if missing:
            try:
                vectors[missing] = await self._providers.embed(
                    target, [items.texts[i] for i in missing], "document", deadline
                )
            except TextTooLong as exc:
                raise _too_long(_reindexed(exc, missing[exc.index]), items.text_ids, "items") from None
        return _Embedded(
            batch=self._upload(items, vectors, target),
            project_id=access.project_id,
            digests=[digest(fingerprint, t, v) for t, v in zip(items.texts, vectors, strict=True)],
            reused=n - len(missing),
        )

    async def _project_target(self, conn: asyncpg.Connection, access: ProjectAccess) -> ProviderTarget:
        instance_id, _ = access.require_instance()
        target = await q.provider_target(conn, instance_id)
        if target is None:  # deleted since the project was read
            raise FailedPrecondition(
                f"project {access.name} lost its instance; rebind it with UpdateProject",
                preconditions=[PreconditionViolation("NO_INSTANCE", f"project:{access.name}", "bound to no instance")],
            )
        return target

    @staticmethod
    def _upload(items: TextBatch, vectors: np.ndarray[Any, Any], target: ProviderTarget) -> UploadBatch:
        """The upload of ``items`` with ``vectors``, each item checked to be for ``target`` (a project rebound
        to another instance while its texts were embedded is refused at commit, not stored)."""
        n = len(items)
        return UploadBatch(
            text_ids=items.text_ids,
            vectors=vectors,
            vector_dims=[0] * n,
            instances=[target.instance] * n,
            texts=list(items.texts),
            metadata=items.metadata,
        )

    async def _record_digests(self, batches: list[_Embedded]) -> None:
        """Record what made the committed vectors (best effort: a lost digest costs one re-embedding later)."""
        try:
            async with self._pool.acquire() as conn:
                for b in batches:
                    if b.batch.text_ids:
                        await q.set_digests(conn, b.project_id, b.batch.text_ids, b.digests)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning(
                "could not record text digests (%s): the texts will be embedded again next time", type(exc).__name__
            )

    # --- StreamUpsertTexts ------------------------------------------------------------------------------------

    async def upsert_stream(
        self, principal: Principal, messages: AsyncIterator[TextStreamMessage], deadline: float | None
    ) -> TextStreamResult:
        """Embed and commit each streamed batch in order (``Embeddings.upsert_stream`` semantics).

        A reader embeds up to ``READ_AHEAD_PER_SLOT`` × the per-instance concurrency batches ahead while earlier
        ones are written. A batch whose embedding failed reaches ``Embeddings.upsert_stream`` as a batch whose
        loading fails, so the stream ends with its error at its position, after exactly the batches before it.

        Raises:
            VdbError: the first failing batch's error ("batch N: …", ErrorInfo STREAM_BATCH_FAILED).
        """
        ahead = max(STREAM_DEPTH, READ_AHEAD_PER_SLOT * self._providers.concurrency)
        queue: asyncio.Queue[tuple[TextStreamMessage, asyncio.Task[_Embedded | None]] | None] = asyncio.Queue(ahead)
        project: list[tuple[str, str]] = []
        embedded: list[_Embedded | None] = []
        failed: list[BaseException] = []

        async def embed_one(m: TextStreamMessage) -> _Embedded | None:
            owner, handle = project[0]
            try:
                self._embeddings.check_batch_size(m.size)
            except InvalidArgument:
                return None  # refused by Embeddings.upsert_stream before the batch is used
            if (m.owner and m.owner != owner) or (m.project_handle and m.project_handle != handle):
                return None  # likewise
            return await self._embed_batch(principal, owner, handle, m.items, deadline)

        async def read() -> None:
            try:
                async for m in messages:
                    if not project:
                        project.append((m.owner or principal.user_handle or "", m.project_handle))
                    await queue.put((m, asyncio.create_task(embed_one(m))))
            except Exception as exc:  # the client's stream broke: end after the batches already read
                failed.append(exc)
            finally:
                await queue.put(None)

        writer: list[asyncio.Task[None]] = []

        def record_later(done: list[_Embedded]) -> None:
            """Write digests off the stream's path, one statement after the other."""
            previous = writer[-1] if writer else None

            async def write() -> None:
                if previous is not None:
                    await previous
                await self._record_digests(done)

            writer.append(asyncio.create_task(write()))

        async def batches() -> AsyncGenerator[StreamBatch, None]:
            recorded = 0
            while (entry := await queue.get()) is not None:
                m, task = entry
                error: VdbError | None = None
                batch: _Embedded | None = None
                try:
                    batch = await task
                except VdbError as exc:
                    error = exc
                embedded.append(batch)
                # Batches before len(embedded) - 1 - STREAM_DEPTH are committed by now: Embeddings.upsert_stream
                # asks for another message only with fewer than STREAM_DEPTH batches in flight. (A digest
                # written too early is harmless: it matches no row but the one it describes.)
                upto = len(embedded) - 1 - STREAM_DEPTH
                if upto > recorded:
                    record_later([b for b in embedded[recorded:upto] if b is not None])
                    recorded = upto

                def load(error: VdbError | None = error, batch: _Embedded | None = batch) -> UploadBatch:
                    if error is not None:
                        raise _as_items(error)
                    assert batch is not None
                    return batch.batch

                yield StreamBatch(owner=m.owner, project_handle=m.project_handle, size=m.size, load=load)
            if failed:
                raise failed[0]

        reader = asyncio.create_task(read())
        committed = 0
        stream = batches()
        try:
            result = await self._embeddings.upsert_stream(principal, stream)
            committed = result.batches
        except VdbError as exc:
            committed = int(dict(exc.info.metadata).get("committed_batches", 0)) if exc.info else 0
            raise
        finally:
            await stream.aclose()
            reader.cancel()
            while not queue.empty():
                entry = queue.get_nowait()
                if entry is not None:
                    entry[1].cancel()
            with contextlib.suppress(BaseException):
                await reader
            if writer:
                with contextlib.suppress(Exception):
                    await writer[-1]
            done = [b for b in embedded[:committed] if b is not None]
            # Everything committed and not recorded yet (recording a batch twice is harmless).
            flushed = max(0, len(embedded) - 1 - STREAM_DEPTH) if writer else 0
            rest = [b for b in embedded[min(flushed, committed) : committed] if b is not None]
            if rest:
                await self._record_digests(rest)
        return TextStreamResult(result, sum(b.reused for b in done))

    # --- SearchSimilar with a text ----------------------------------------------------------------------------

    async def search(
        self, principal: Principal, query: SearchQuery, text: str, deadline: float | None
    ) -> list[SearchResult]:
        """SearchSimilar for a text: embed it (query form) with the project's instance, then ``Search``.

        Raises:
            Unauthenticated: no key (a text search spends the instance's provider quota, even on public projects).
            InvalidArgument: empty text, or one the provider finds too long; the rest as ``Search.search``.
            FailedPrecondition, ResourceExhausted, Unavailable: see ``vdb_grpc.providers.client``.
        """
        if principal.is_anonymous:
            raise Unauthenticated(
                "a text search calls the project instance's provider: send 'authorization: Bearer <key>' "
                "(or search by vector or text_id)"
            )
        if not text:
            raise InvalidArgument.field("text", "must not be empty")
        validate(replace(query, vector=[1.0]))  # a bad limit or filter is refused before the provider is paid
        async with self._pool.acquire() as conn:
            access = await resolve_project_access(conn, principal, query.owner, query.project_handle, "read")
            target = await self._project_target(conn, access)
        _check_texts([text], None, target, "text")
        key = (target.fingerprint(), text)
        vector = self._query_cache.get(key)
        if vector is None:
            try:
                vector = (await self._providers.embed(target, [text], "query", deadline))[0]
            except TextTooLong as exc:
                raise InvalidArgument.field("text", exc.message) from None
            self._query_cache.put(key, vector)
        return await self._search.search(principal, replace(query, vector=vector.tolist()))


def _reindexed(exc: TextTooLong, index: int) -> TextTooLong:
    return TextTooLong(exc.message, index)
