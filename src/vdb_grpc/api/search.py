"""SearchSimilar: proto ⇄ domain values (the servicer method lives in ``api/embeddings.py``)."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import struct_pb2

from vdb_grpc.api.convert import principal
from vdb_grpc.domain.search import Condition, Search, SearchQuery, SearchResult
from vdb_grpc.errors import InvalidArgument
from vdb_grpc.limits import Limits, json_value
from vdb_grpc.v1 import embedding_pb2

DEFAULT_LIMITS = Limits()
#: Responses with metadata of more results than this are built in a worker thread.
OFF_LOOP_RESULTS = 16


def _conditions(items: list[embedding_pb2.MetadataCondition], field: str, limits: Limits) -> tuple[Condition, ...]:
    out = []
    for i, c in enumerate(items):
        if not c.HasField("value") or c.value.WhichOneof("kind") is None:
            raise InvalidArgument.field(f"{field}[{i}].value", "is required (a JSON value; use null_value for null)")
        out.append(Condition(key=c.key, value=json_value(c.value, limits.metadata_depth, f"{field}[{i}].value")))
    return tuple(out)


def search_query(request: embedding_pb2.SearchSimilarRequest, limits: Limits = DEFAULT_LIMITS) -> SearchQuery:
    """The domain query of a SearchSimilarRequest.

    Raises:
        InvalidArgument: a condition without value, or one nesting too deep or holding NaN or infinity.
    """
    which = request.WhichOneof("query")
    return SearchQuery(
        owner=request.owner,
        project_handle=request.project_handle,
        text_id=request.text_id if which == "text_id" else None,
        vector=list(request.vector.values) if which == "vector" else None,
        limit=request.limit,
        offset=request.offset,
        threshold=request.threshold if request.HasField("threshold") else None,
        exclude=_conditions(list(request.exclude), "exclude", limits),
        require=_conditions(list(request.require), "require", limits),
        include_text=request.include_text,
        include_metadata=request.include_metadata,
    )


def search_response(results: list[SearchResult]) -> embedding_pb2.SearchSimilarResponse:
    """The response message for domain results."""
    out = embedding_pb2.SearchSimilarResponse()
    for r in results:
        msg = out.results.add(text_id=r.text_id, similarity=r.similarity)
        if r.text is not None:
            msg.text = r.text
        if r.metadata is not None:
            s = struct_pb2.Struct()
            s.update(r.metadata)
            msg.metadata.CopyFrom(s)
    return out


class SearchSimilarMixin:
    """``SearchSimilar`` for the EmbeddingService servicer: parse → ``Search.search`` → response."""

    _search: Search
    _limits: Limits

    async def SearchSimilar(
        self, request: embedding_pb2.SearchSimilarRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.SearchSimilarResponse:
        results = await self._search.search(principal(), search_query(request, self._limits))
        if request.include_metadata and len(results) > OFF_LOOP_RESULTS:  # much JSON to convert: off the loop
            return await asyncio.to_thread(search_response, results)
        return search_response(results)
