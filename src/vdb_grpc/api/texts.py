"""EmbedTexts, UpsertTexts, StreamUpsertTexts and SearchSimilar's ``text`` query: proto ⇄ domain values.

``EmbeddingTextServicer`` is the EmbeddingService servicer of ``api/embeddings.py`` plus these methods; a
SearchSimilar without a ``text`` goes to the plain servicer's method unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from vdb_grpc.api.convert import principal
from vdb_grpc.api.embeddings import OFF_LOOP_BYTES, EmbeddingServicer
from vdb_grpc.api.search import search_query, search_response
from vdb_grpc.domain.embeddings import Embeddings
from vdb_grpc.domain.search import Search
from vdb_grpc.domain.texts import TextBatch, Texts, TextStreamMessage
from vdb_grpc.limits import Limits, json_object, too_large
from vdb_grpc.v1 import embedding_pb2 as pb


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's gRPC deadline as a ``time.monotonic()`` instant; None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def text_batch(items: Sequence[pb.TextItem], limits: Limits) -> TextBatch:
    """The domain batch of a request's text items (metadata bounded as in ``api.embeddings.upload_batch``).

    Raises:
        InvalidArgument: metadata certainly over ``VDB_MAX_METADATA_BYTES`` or nesting deeper than
            ``VDB_MAX_METADATA_DEPTH`` (naming the item).
    """
    metadata: list[Any] = []
    for k, item in enumerate(items):
        if not item.HasField("metadata"):
            metadata.append(None)
            continue
        if item.metadata.ByteSize() > 4 * limits.metadata_bytes:
            raise too_large(
                f"items[{k}].metadata", "has about", item.metadata.ByteSize(), limits.metadata_bytes,
                "VDB_MAX_METADATA_BYTES",
            )  # fmt: skip
        metadata.append(json_object(item.metadata, limits.metadata_depth, f"items[{k}].metadata", finite=False))
    return TextBatch(text_ids=[i.text_id for i in items], texts=[i.text for i in items], metadata=metadata)


async def text_batch_off_loop(items: Sequence[pb.TextItem], size: int, limits: Limits) -> TextBatch:
    """``text_batch``, in a worker thread when the message is large (Struct conversion holds the loop)."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(text_batch, items, limits)
    return text_batch(items, limits)


class EmbeddingTextServicer(EmbeddingServicer):
    """gRPC adapter for ``Embeddings``, ``Search`` and ``Texts``: parse → one domain call → response."""

    def __init__(self, embeddings: Embeddings, search: Search, texts: Texts, limits: Limits | None = None) -> None:
        super().__init__(embeddings, search, limits)
        self._texts = texts

    async def SearchSimilar(
        self, request: pb.SearchSimilarRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchSimilarResponse:
        if request.WhichOneof("query") != "text":
            return await super().SearchSimilar(request, context)
        results = await self._texts.search(principal(), search_query(request), request.text, deadline_of(context))
        return search_response(results)

    async def EmbedTexts(
        self, request: pb.EmbedTextsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedTextsResponse:
        vectors = await self._texts.embed(principal(), request.instance, list(request.texts), deadline_of(context))
        return pb.EmbedTextsResponse(vectors=[pb.Vector(values=row.tolist()) for row in vectors])

    async def UpsertTexts(
        self, request: pb.UpsertTextsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertTextsResponse:
        out = await self._texts.upsert(
            principal(), request.owner, request.project_handle,
            await text_batch_off_loop(request.items, request.ByteSize(), self._limits),
            deadline_of(context),
        )
        r = out.result
        return pb.UpsertTextsResponse(
            text_ids=r.text_ids, count=r.count, inserted=r.inserted, replaced=r.replaced, reused=out.reused
        )

    async def StreamUpsertTexts(
        self, request_iterator: AsyncIterator[pb.StreamUpsertTextsRequest], context: grpc.aio.ServicerContext
    ) -> pb.StreamUpsertTextsResponse:
        async def messages() -> AsyncIterator[TextStreamMessage]:
            async for m in request_iterator:
                yield TextStreamMessage(
                    owner=m.owner, project_handle=m.project_handle, size=len(m.items),
                    items=await text_batch_off_loop(m.items, m.ByteSize(), self._limits),
                )

        out = await self._texts.upsert_stream(principal(), messages(), deadline_of(context))
        r = out.result
        return pb.StreamUpsertTextsResponse(
            batches=r.batches, count=r.count, inserted=r.inserted, replaced=r.replaced, reused=out.reused
        )
