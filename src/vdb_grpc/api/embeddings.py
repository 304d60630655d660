"""EmbeddingService servicer: proto ⇄ domain values, nothing else (SearchSimilar comes from the search mixin).

Uploads are converted column by column: the vectors of a batch become one float32 matrix in a single numpy
call when they all have one length (the common case; else one array per item), and ``Struct`` metadata is
turned into plain JSON values by a small converter (about 1.5x faster than ``json_format.MessageToDict``;
integral numbers become ints, so ``{"year": 1781}`` is stored as ``1781``, not ``1781.0``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import grpc
import numpy as np

from vdb_grpc.api.convert import principal
from vdb_grpc.api.search import SearchSimilarMixin
from vdb_grpc.auth import current_reauthenticate
from vdb_grpc.domain.embeddings import Embeddings, StreamBatch, UploadBatch
from vdb_grpc.domain.search import Search
from vdb_grpc.errors import VdbError
from vdb_grpc.limits import Limits, json_object, too_large
from vdb_grpc.queries.embeddings import EmbeddingRow
from vdb_grpc.v1 import embedding_pb2 as pb
from vdb_grpc.v1 import embedding_pb2_grpc

#: Requests larger than this (bytes) are converted to domain values in a worker thread, off the event loop.
OFF_LOOP_BYTES = 256 * 1024
#: Responses of more rows than this are built in a worker thread.
OFF_LOOP_ROWS = 16


def upload_batch(items: Sequence[pb.Embedding], limits: Limits) -> UploadBatch:
    """The domain batch of a request's embeddings.

    Raises:
        InvalidArgument: metadata nesting deeper than ``limits.metadata_depth`` (naming the item).
    """
    vectors: Any
    lengths = {len(e.vector) for e in items}
    if len(lengths) == 1:
        # One matrix, filled row by row: ~20 % less CPU than np.array over the list of repeated fields, which
        # first discovers the nested sequences' shape (the server's largest cost of an upload after the wire).
        vectors = np.empty((len(items), lengths.pop()), dtype=np.float32)
        for i, e in enumerate(items):
            vectors[i] = e.vector
    else:  # vectors of different lengths (refused item by item in the domain), or no items
        vectors = [np.array(e.vector, dtype=np.float32) for e in items]
    text_ids: list[str] = []
    vector_dims: list[int] = []
    instances: list[str] = []
    texts: list[str | None] = []
    metadata: list[Any] = []
    depth = limits.metadata_depth
    for i, e in enumerate(items):
        text_ids.append(e.text_id)
        vector_dims.append(e.vector_dim)
        instances.append(e.instance)
        texts.append(e.text if e.HasField("text") else None)
        # NaN and infinity pass here: the domain lists them with every other problem of the batch
        has = e.HasField("metadata")
        if has and e.metadata.ByteSize() > 4 * limits.metadata_bytes:
            # certainly over the limit (JSON is at most ~4x smaller than the wire form): refused unconverted
            raise too_large(
                f"embeddings[{i}].metadata",
                "has about",
                e.metadata.ByteSize(),
                limits.metadata_bytes,
                "VDB_MAX_METADATA_BYTES",
            )
        metadata.append(json_object(e.metadata, depth, f"embeddings[{i}].metadata", finite=False) if has else None)
    return UploadBatch(
        text_ids=text_ids,
        vectors=vectors,
        vector_dims=vector_dims,
        instances=instances,
        texts=texts,
        metadata=metadata,
    )


def embedding_message(row: EmbeddingRow) -> pb.Embedding:
    """A stored embedding as the API message (vector only when it was read)."""
    msg = pb.Embedding(text_id=row.text_id, vector_dim=row.vector_dim, instance=row.instance)
    if row.vector is not None:
        msg.vector.extend(row.vector.tolist())
    if row.text is not None:
        msg.text = row.text
    # Metadata is a JSON object for everything uploaded through this API; a non-object value left by the Go
    # service cannot be a Struct and is left out rather than misrepresented.
    if isinstance(row.metadata, dict):
        msg.metadata.update(row.metadata)
    return msg


def _raise(exc: VdbError) -> UploadBatch:
    raise exc


class EmbeddingServicer(SearchSimilarMixin, embedding_pb2_grpc.EmbeddingServiceServicer):
    """gRPC adapter for ``Embeddings`` (and ``Search`` through ``SearchSimilarMixin``)."""

    def __init__(self, embeddings: Embeddings, search: Search, limits: Limits | None = None) -> None:
        self._embeddings = embeddings
        self._search = search
        self._limits = limits or Limits()

    async def UpsertEmbeddings(
        self, request: pb.UpsertEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertEmbeddingsResponse:
        self._embeddings.check_batch_size(len(request.embeddings))
        if request.ByteSize() > OFF_LOOP_BYTES:
            batch = await asyncio.to_thread(upload_batch, request.embeddings, self._limits)
        else:
            batch = upload_batch(request.embeddings, self._limits)
        result = await self._embeddings.upsert(principal(), request.owner, request.project_handle, batch)
        return pb.UpsertEmbeddingsResponse(
            text_ids=result.text_ids, count=result.count, inserted=result.inserted, replaced=result.replaced
        )

    async def StreamUpsertEmbeddings(
        self, request_iterator: AsyncIterator[pb.StreamUpsertEmbeddingsRequest], context: grpc.aio.ServicerContext
    ) -> pb.StreamUpsertEmbeddingsResponse:
        async def batches() -> AsyncIterator[StreamBatch]:
            messages = aiter(request_iterator)
            while True:
                try:
                    message = await anext(messages)
                except StopAsyncIteration:
                    return
                except VdbError as exc:  # a message the interceptor refused: fails as that batch, in order
                    yield StreamBatch(owner="", project_handle="", size=0, load=partial(_raise, exc))
                    return
                yield StreamBatch(
                    owner=message.owner,
                    project_handle=message.project_handle,
                    size=len(message.embeddings),
                    load=lambda m=message: upload_batch(m.embeddings, self._limits),  # type: ignore[misc]
                )

        result = await self._embeddings.upsert_stream(
            principal(), batches(), reauthenticate=current_reauthenticate.get()
        )
        return pb.StreamUpsertEmbeddingsResponse(
            batches=result.batches, count=result.count, inserted=result.inserted, replaced=result.replaced
        )

    async def GetEmbedding(
        self, request: pb.GetEmbeddingRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEmbeddingResponse:
        row = await self._embeddings.get(principal(), request.owner, request.project_handle, request.text_id)
        if row.metadata_json_size > OFF_LOOP_BYTES:
            return pb.GetEmbeddingResponse(embedding=await asyncio.to_thread(embedding_message, row))
        return pb.GetEmbeddingResponse(embedding=embedding_message(row))

    async def ListEmbeddings(
        self, request: pb.ListEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEmbeddingsResponse:
        page = await self._embeddings.list(
            principal(),
            request.owner,
            request.project_handle,
            request.page_size,
            request.page_token,
            include_vectors=request.include_vectors,
        )
        if len(page.embeddings) > OFF_LOOP_ROWS:
            messages = await asyncio.to_thread(lambda: [embedding_message(r) for r in page.embeddings])
        else:
            messages = [embedding_message(r) for r in page.embeddings]
        return pb.ListEmbeddingsResponse(embeddings=messages, next_page_token=page.next_page_token)

    async def DeleteEmbedding(
        self, request: pb.DeleteEmbeddingRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEmbeddingResponse:
        await self._embeddings.delete(principal(), request.owner, request.project_handle, request.text_id)
        return pb.DeleteEmbeddingResponse()

    async def DeleteAllEmbeddings(
        self, request: pb.DeleteAllEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAllEmbeddingsResponse:
        deleted = await self._embeddings.delete_all(principal(), request.owner, request.project_handle)
        return pb.DeleteAllEmbeddingsResponse(deleted_count=deleted)
