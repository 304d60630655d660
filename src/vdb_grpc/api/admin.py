"""AdminService servicer: proto ⇄ domain values, nothing else."""

from __future__ import annotations

import grpc

from vdb_grpc.api.convert import principal
from vdb_grpc.domain.admin import Admin
from vdb_grpc.v1 import admin_pb2 as pb
from vdb_grpc.v1 import admin_pb2_grpc


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """gRPC adapter for ``Admin``."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    async def SanityCheck(
        self, request: pb.SanityCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.SanityCheckResponse:
        report = await self._admin.sanity_check(principal())
        return pb.SanityCheckResponse(
            ok=report.ok,
            findings=[
                pb.SanityFinding(check=f.check, subject=f.subject, description=f.description) for f in report.findings
            ],
        )

    async def ResetDatabase(
        self, request: pb.ResetDatabaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetDatabaseResponse:
        counts = await self._admin.reset_database(principal(), request.confirm)
        return pb.ResetDatabaseResponse(
            deleted_users=counts.users,
            deleted_projects=counts.projects,
            deleted_embeddings=counts.embeddings,
            deleted_instances=counts.instances,
            deleted_definitions=counts.definitions,
        )

    async def ReencryptApiKeys(
        self, request: pb.ReencryptApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReencryptApiKeysResponse:
        counts = await self._admin.reencrypt_api_keys(principal())
        return pb.ReencryptApiKeysResponse(
            reencrypted=counts.reencrypted,
            encrypted_from_plaintext=counts.encrypted_from_plaintext,
            already_current=counts.already_current,
            failed=counts.failed,
            failed_instances=counts.failed_instances,
        )
