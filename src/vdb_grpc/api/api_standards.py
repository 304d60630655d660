"""ApiStandardService servicer."""

from __future__ import annotations

import grpc

from vdb_grpc.api.convert import principal, update_fields
from vdb_grpc.domain.api_standards import ApiStandards
from vdb_grpc.queries.api_standards import ApiStandardRow
from vdb_grpc.v1 import api_standard_pb2 as pb
from vdb_grpc.v1 import api_standard_pb2_grpc


def _message(s: ApiStandardRow) -> pb.ApiStandard:
    return pb.ApiStandard(
        api_standard_handle=s.api_standard_handle,
        description=s.description,
        key_method=s.key_method,
        key_field=s.key_field,
        request_shape=s.request_shape,
        key_optional=s.key_optional,
        max_inputs=s.max_inputs,
    )


def _row(m: pb.ApiStandard) -> ApiStandardRow:
    return ApiStandardRow(
        api_standard_handle=m.api_standard_handle,
        description=m.description,
        key_method=m.key_method,
        key_field=m.key_field,
        request_shape=m.request_shape,
        key_optional=m.key_optional,
        max_inputs=m.max_inputs,
    )


class ApiStandardServicer(api_standard_pb2_grpc.ApiStandardServiceServicer):
    """gRPC adapter for ``ApiStandards``."""

    def __init__(self, standards: ApiStandards) -> None:
        self._standards = standards

    async def CreateApiStandard(
        self, request: pb.CreateApiStandardRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiStandardResponse:
        row = await self._standards.create(principal(), _row(request.api_standard))
        return pb.CreateApiStandardResponse(api_standard=_message(row))

    async def GetApiStandard(
        self, request: pb.GetApiStandardRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetApiStandardResponse:
        return pb.GetApiStandardResponse(api_standard=_message(await self._standards.get(request.api_standard_handle)))

    async def ListApiStandards(
        self, request: pb.ListApiStandardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiStandardsResponse:
        page = await self._standards.list(request.page_size, request.page_token)
        return pb.ListApiStandardsResponse(
            api_standards=[_message(s) for s in page.api_standards], next_page_token=page.next_page_token
        )

    async def UpdateApiStandard(
        self, request: pb.UpdateApiStandardRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateApiStandardResponse:
        fields = update_fields(request.api_standard, request.update_mask, frozenset({"api_standard_handle"}))
        row, created = await self._standards.update(
            principal(), _row(request.api_standard), fields, allow_missing=request.allow_missing
        )
        return pb.UpdateApiStandardResponse(api_standard=_message(row), created=created)

    async def DeleteApiStandard(
        self, request: pb.DeleteApiStandardRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteApiStandardResponse:
        await self._standards.delete(principal(), request.api_standard_handle)
        return pb.DeleteApiStandardResponse()
