"""ProjectService servicer: proto ⇄ domain values, nothing else."""

from __future__ import annotations

import grpc

from vdb_grpc.api.convert import principal, share_message, update_fields
from vdb_grpc.domain.projects import ProjectInput, Projects, ProjectView
from vdb_grpc.v1 import project_pb2 as pb
from vdb_grpc.v1 import project_pb2_grpc

#: Fields a no-mask Update never takes from the request: the identity and the output-only fields (so a
#: GetProject answer can be sent back as an UpdateProject request).
NOT_FROM_REQUEST = frozenset({"owner", "project_handle", "role", "number_of_embeddings", "shares", "instance_missing"})


def project_message(v: ProjectView) -> pb.Project:
    """A project as the API message."""
    msg = pb.Project(
        owner=v.owner,
        project_handle=v.project_handle,
        description=v.description,
        metadata_schema=v.metadata_schema,
        instance=v.instance,
        public_read=v.public_read,
        role=v.role,
        shares=[share_message(s) for s in v.shares],
        instance_missing=v.instance_missing,
    )
    if v.number_of_embeddings is not None:
        msg.number_of_embeddings = v.number_of_embeddings
    return msg


def _input(p: pb.Project) -> ProjectInput:
    return ProjectInput(
        owner=p.owner,
        project_handle=p.project_handle,
        description=p.description,
        metadata_schema=p.metadata_schema,
        instance=p.instance,
        public_read=p.public_read,
    )


class ProjectServicer(project_pb2_grpc.ProjectServiceServicer):
    """gRPC adapter for ``Projects``."""

    def __init__(self, projects: Projects) -> None:
        self._projects = projects

    async def CreateProject(
        self, request: pb.CreateProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateProjectResponse:
        view = await self._projects.create(principal(), _input(request.project))
        return pb.CreateProjectResponse(project=project_message(view))

    async def GetProject(
        self, request: pb.GetProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProjectResponse:
        view = await self._projects.get(principal(), request.owner, request.project_handle)
        return pb.GetProjectResponse(project=project_message(view))

    async def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProjectsResponse:
        page = await self._projects.list(
            principal(), request.owner, request.include_public, request.page_size, request.page_token
        )
        return pb.ListProjectsResponse(
            projects=[project_message(v) for v in page.projects], next_page_token=page.next_page_token
        )

    async def UpdateProject(
        self, request: pb.UpdateProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateProjectResponse:
        fields = update_fields(request.project, request.update_mask, NOT_FROM_REQUEST)
        view, created = await self._projects.update(
            principal(), _input(request.project), fields, allow_missing=request.allow_missing
        )
        return pb.UpdateProjectResponse(project=project_message(view), created=created)

    async def DeleteProject(
        self, request: pb.DeleteProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteProjectResponse:
        removed = await self._projects.delete(principal(), request.owner, request.project_handle)
        return pb.DeleteProjectResponse(deleted_embeddings=removed)

    async def ShareProject(
        self, request: pb.ShareProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareProjectResponse:
        share = await self._projects.share(
            principal(), request.owner, request.project_handle, request.share.user_handle, request.share.role
        )
        return pb.ShareProjectResponse(share=share_message(share))

    async def UnshareProject(
        self, request: pb.UnshareProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnshareProjectResponse:
        await self._projects.unshare(principal(), request.owner, request.project_handle, request.user_handle)
        return pb.UnshareProjectResponse()

    async def ListProjectShares(
        self, request: pb.ListProjectSharesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProjectSharesResponse:
        page = await self._projects.list_shares(
            principal(), request.owner, request.project_handle, request.page_size, request.page_token
        )
        return pb.ListProjectSharesResponse(
            shares=[share_message(s) for s in page.shares], next_page_token=page.next_page_token
        )

    async def TransferProject(
        self, request: pb.TransferProjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferProjectResponse:
        view = await self._projects.transfer(principal(), request.owner, request.project_handle, request.new_owner)
        return pb.TransferProjectResponse(project=project_message(view))
