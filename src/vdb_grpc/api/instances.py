"""LlmInstanceService servicer: proto ⇄ domain values, nothing else.

``api_key`` is read from requests and handed to the domain layer, which encrypts it; responses are built from
``InstanceRow``, which carries no key material, so no response can contain a key.
"""

from __future__ import annotations

import grpc

from vdb_grpc.api.convert import principal, share_message, update_fields
from vdb_grpc.domain.instances import Instances
from vdb_grpc.queries.instances import InstanceRow, InstanceValues
from vdb_grpc.v1 import llm_instance_pb2 as pb
from vdb_grpc.v1 import llm_instance_pb2_grpc

#: Fields that select the instance or are output only: never "set" by an Update without a mask.
NOT_UPDATED_WITHOUT_MASK = frozenset({"owner", "instance_handle", "definition", "has_api_key", "access_role"})


def instance_message(i: InstanceRow) -> pb.LlmInstance:
    """A stored instance as the API message (``api_key`` is never filled in)."""
    return pb.LlmInstance(
        owner=i.owner,
        instance_handle=i.instance_handle,
        endpoint=i.endpoint,
        description=i.description,
        api_standard=i.api_standard,
        model=i.model,
        dimensions=i.dimensions,
        context_limit=i.context_limit,
        definition=i.definition,
        has_api_key=i.has_api_key,
        access_role=i.role or "",
    )


def _values(m: pb.LlmInstance) -> InstanceValues:
    return InstanceValues(
        owner=m.owner,
        instance_handle=m.instance_handle,
        endpoint=m.endpoint,
        description=m.description,
        api_standard=m.api_standard,
        model=m.model,
        dimensions=m.dimensions,
        context_limit=m.context_limit,
    )


class LlmInstanceServicer(llm_instance_pb2_grpc.LlmInstanceServiceServicer):
    """gRPC adapter for ``Instances``."""

    def __init__(self, instances: Instances) -> None:
        self._instances = instances

    async def CreateInstance(
        self, request: pb.CreateInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateInstanceResponse:
        row = await self._instances.create(principal(), _values(request.instance), request.instance.api_key)
        return pb.CreateInstanceResponse(instance=instance_message(row))

    async def CreateInstanceFromDefinition(
        self, request: pb.CreateInstanceFromDefinitionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateInstanceFromDefinitionResponse:
        row = await self._instances.create_from_definition(
            principal(), request.definition, _values(request.instance), request.instance.api_key
        )
        return pb.CreateInstanceFromDefinitionResponse(instance=instance_message(row))

    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInstanceResponse:
        row = await self._instances.get(principal(), request.owner, request.instance_handle)
        return pb.GetInstanceResponse(instance=instance_message(row))

    async def ListInstances(
        self, request: pb.ListInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInstancesResponse:
        page = await self._instances.list(principal(), request.page_size, request.page_token)
        return pb.ListInstancesResponse(
            instances=[instance_message(i) for i in page.instances], next_page_token=page.next_page_token
        )

    async def UpdateInstance(
        self, request: pb.UpdateInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateInstanceResponse:
        fields = update_fields(request.instance, request.update_mask, NOT_UPDATED_WITHOUT_MASK)
        row, created = await self._instances.update(
            principal(),
            _values(request.instance),
            request.instance.api_key,
            fields,
            allow_missing=request.allow_missing,
            clear_api_key=request.clear_api_key,
        )
        return pb.UpdateInstanceResponse(instance=instance_message(row), created=created)

    async def DeleteInstance(
        self, request: pb.DeleteInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteInstanceResponse:
        detached = await self._instances.delete(
            principal(), request.owner, request.instance_handle, force=request.force
        )
        return pb.DeleteInstanceResponse(detached_projects=detached)

    async def ShareInstance(
        self, request: pb.ShareInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareInstanceResponse:
        share = await self._instances.share(
            principal(), request.owner, request.instance_handle, request.share.user_handle, request.share.role
        )
        return pb.ShareInstanceResponse(share=share_message(share))

    async def UnshareInstance(
        self, request: pb.UnshareInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnshareInstanceResponse:
        removed, detached = await self._instances.unshare(
            principal(), request.owner, request.instance_handle, request.user_handle, force=request.force
        )
        return pb.UnshareInstanceResponse(removed=removed, detached_projects=detached)

    async def ListInstanceShares(
        self, request: pb.ListInstanceSharesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInstanceSharesResponse:
        page = await self._instances.list_shares(
            principal(), request.owner, request.instance_handle, request.page_size, request.page_token
        )
        return pb.ListInstanceSharesResponse(
            shares=[share_message(s) for s in page.shares], next_page_token=page.next_page_token
        )
