"""EmbeddingService servicer: proto ⇄ domain values, nothing else (SearchSimilar comes from the search mixin).

Uploads are converted column by column: the vectors of a batch become one float32 matrix in a single numpy
call when they all have one length (the common case; else one array per item), and ``Struct`` metadata is
turned into plain JSON values by a small converter (about 1.5x faster than ``json_format.MessageToDict``;
integral numbers become ints, so ``{"year": 1781}`` is stored as ``1781``, not ``1781.0``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2

from vdb_grpc.api.convert import principal
from vdb_grpc.api.search import SearchSimilarMixin
from vdb_grpc.auth import current_reauthenticate
from vdb_grpc.domain.embeddings import Embeddings, StreamBatch, UploadBatch
from vdb_grpc.domain.search import Search
from vdb_grpc.queries.embeddings import EmbeddingRow
from vdb_grpc.v1 import embedding_pb2 as pb
from vdb_grpc.v1 import embedding_pb2_grpc

#: Integral doubles up to this magnitude are exact and become Python ints.
_EXACT_INT = 2.0**53


def json_value(v: struct_pb2.Value) -> Any:
    """A ``google.protobuf.Value`` as a plain JSON value (dict, list, str, int/float, bool, None)."""
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        x = v.number_value
        return int(x) if x.is_integer() and -_EXACT_INT <= x <= _EXACT_INT else x
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return json_object(v.struct_value)
    if kind == "list_value":
        return [json_value(x) for x in v.list_value.values]
    return None


def json_object(s: struct_pb2.Struct) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict (iterating keys is faster than the map's ``items()`` view)."""
    fields = s.fields
    return {k: json_value(fields[k]) for k in fields}


def upload_batch(items: Sequence[pb.Embedding]) -> UploadBatch:
    """The domain batch of a request's embeddings."""
    try:
        vectors: Any = np.array([e.vector for e in items], dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError("not a matrix")
    except ValueError:  # vectors of different lengths (refused item by item in the domain)
        vectors = [np.array(e.vector, dtype=np.float32) for e in items]
    text_ids: list[str] = []
    vector_dims: list[int] = []
    instances: list[str] = []
    texts: list[str | None] = []
    metadata: list[Any] = []
    for e in items:
        text_ids.append(e.text_id)
        vector_dims.append(e.vector_dim)
        instances.append(e.instance)
        texts.append(e.text if e.HasField("text") else None)
        metadata.append(json_object(e.metadata) if e.HasField("metadata") else None)
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


class EmbeddingServicer(SearchSimilarMixin, embedding_pb2_grpc.EmbeddingServiceServicer):
    """gRPC adapter for ``Embeddings`` (and ``Search`` through ``SearchSimilarMixin``)."""

    def __init__(self, embeddings: Embeddings, search: Search) -> None:
        self._embeddings = embeddings
        self._search = search

    async def UpsertEmbeddings(
        self, request: pb.UpsertEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertEmbeddingsResponse:
        self._embeddings.check_batch_size(len(request.embeddings))
        result = await self._embeddings.upsert(
            principal(), request.owner, request.project_handle, upload_batch(request.embeddings)
        )
        return pb.UpsertEmbeddingsResponse(
            text_ids=result.text_ids, count=result.count, inserted=result.inserted, replaced=result.replaced
        )

    async def StreamUpsertEmbeddings(
        self, request_iterator: AsyncIterator[pb.StreamUpsertEmbeddingsRequest], context: grpc.aio.ServicerContext
    ) -> pb.StreamUpsertEmbeddingsResponse:
        async def batches() -> AsyncIterator[StreamBatch]:
            async for message in request_iterator:
                yield StreamBatch(
                    owner=message.owner,
                    project_handle=message.project_handle,
                    size=len(message.embeddings),
                    load=lambda m=message: upload_batch(m.embeddings),  # type: ignore[misc]
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
        return pb.ListEmbeddingsResponse(
            embeddings=[embedding_message(r) for r in page.embeddings], next_page_token=page.next_page_token
        )

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
