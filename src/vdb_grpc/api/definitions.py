"""LlmDefinitionService servicer: proto ⇄ domain values, nothing else."""

from __future__ import annotations

import grpc

from vdb_grpc.api.convert import principal, share_message, update_fields
from vdb_grpc.domain.definitions import Definitions
from vdb_grpc.queries.definitions import DefinitionRow, DefinitionValues
from vdb_grpc.v1 import llm_definition_pb2 as pb
from vdb_grpc.v1 import llm_definition_pb2_grpc

IDENTITY_FIELDS = frozenset({"owner", "definition_handle"})


def definition_message(d: DefinitionRow) -> pb.LlmDefinition:
    """A stored definition as the API message."""
    return pb.LlmDefinition(
        owner=d.owner,
        definition_handle=d.definition_handle,
        endpoint=d.endpoint,
        description=d.description,
        api_standard=d.api_standard,
        model=d.model,
        dimensions=d.dimensions,
        context_limit=d.context_limit,
        is_public=d.is_public,
    )


def _values(m: pb.LlmDefinition) -> DefinitionValues:
    return DefinitionValues(
        owner=m.owner,
        definition_handle=m.definition_handle,
        endpoint=m.endpoint,
        description=m.description,
        api_standard=m.api_standard,
        model=m.model,
        dimensions=m.dimensions,
        context_limit=m.context_limit,
        is_public=m.is_public,
    )


class LlmDefinitionServicer(llm_definition_pb2_grpc.LlmDefinitionServiceServicer):
    """gRPC adapter for ``Definitions``."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions

    async def CreateDefinition(
        self, request: pb.CreateDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDefinitionResponse:
        row = await self._definitions.create(principal(), _values(request.definition))
        return pb.CreateDefinitionResponse(definition=definition_message(row))

    async def GetDefinition(
        self, request: pb.GetDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDefinitionResponse:
        row = await self._definitions.get(principal(), request.owner, request.definition_handle)
        return pb.GetDefinitionResponse(definition=definition_message(row))

    async def ListDefinitions(
        self, request: pb.ListDefinitionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDefinitionsResponse:
        page = await self._definitions.list(principal(), request.page_size, request.page_token)
        return pb.ListDefinitionsResponse(
            definitions=[definition_message(d) for d in page.definitions], next_page_token=page.next_page_token
        )

    async def UpdateDefinition(
        self, request: pb.UpdateDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateDefinitionResponse:
        fields = update_fields(request.definition, request.update_mask, IDENTITY_FIELDS)
        row, created = await self._definitions.update(
            principal(), _values(request.definition), fields, allow_missing=request.allow_missing
        )
        return pb.UpdateDefinitionResponse(definition=definition_message(row), created=created)

    async def DeleteDefinition(
        self, request: pb.DeleteDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDefinitionResponse:
        await self._definitions.delete(principal(), request.owner, request.definition_handle)
        return pb.DeleteDefinitionResponse()

    async def ShareDefinition(
        self, request: pb.ShareDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareDefinitionResponse:
        share = await self._definitions.share(
            principal(), request.owner, request.definition_handle, request.share.user_handle, request.share.role
        )
        return pb.ShareDefinitionResponse(share=share_message(share))

    async def UnshareDefinition(
        self, request: pb.UnshareDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnshareDefinitionResponse:
        removed = await self._definitions.unshare(
            principal(), request.owner, request.definition_handle, request.user_handle
        )
        return pb.UnshareDefinitionResponse(removed=removed)

    async def ListDefinitionShares(
        self, request: pb.ListDefinitionSharesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDefinitionSharesResponse:
        page = await self._definitions.list_shares(
            principal(), request.owner, request.definition_handle, request.page_size, request.page_token
        )
        return pb.ListDefinitionSharesResponse(
            shares=[share_message(s) for s in page.shares], next_page_token=page.next_page_token
        )
