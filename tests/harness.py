"""A running vdb-grpc server on a loopback port, built by the production composition root, and helpers."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from vdb_grpc.v1 import (
    admin_pb2_grpc,
    api_standard_pb2_grpc,
    embedding_pb2_grpc,
    llm_definition_pb2_grpc,
    llm_instance_pb2_grpc,
    project_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)

ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789"
ENCRYPTION_KEY = "test-encryption-key-0123456789abcdef0123"

T = TypeVar("T")


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``key``."""
    return (("authorization", f"Bearer {key}"),)


ADMIN = bearer(ADMIN_KEY)
ANON: tuple[tuple[str, str], ...] = ()


async def rpc_error(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await ``call``, assert it fails with ``code``, return the error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
    return err


def status_details(err: grpc.aio.AioRpcError) -> list[Any]:
    """The unpacked ``google.rpc`` details of a failed call."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            out: list[Any] = []
            for any_msg in status.details:
                for cls in (
                    error_details_pb2.BadRequest,
                    error_details_pb2.PreconditionFailure,
                    error_details_pb2.ResourceInfo,
                ):
                    if any_msg.Is(cls.DESCRIPTOR):
                        msg = cls()
                        any_msg.Unpack(msg)
                        out.append(msg)
            return out
    return []


def field_violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) pairs from a BadRequest detail."""
    return [
        (v.field, v.description)
        for d in status_details(err)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


@dataclass
class Harness:
    """What a servicer test needs: a channel to a real server, its database pool and key helpers."""

    channel: grpc.aio.Channel
    pool: asyncpg.Pool
    port: int

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self.channel)

    @property
    def standards(self) -> api_standard_pb2_grpc.ApiStandardServiceStub:
        return api_standard_pb2_grpc.ApiStandardServiceStub(self.channel)

    @property
    def embeddings(self) -> embedding_pb2_grpc.EmbeddingServiceStub:
        return embedding_pb2_grpc.EmbeddingServiceStub(self.channel)

    @property
    def projects(self) -> project_pb2_grpc.ProjectServiceStub:
        return project_pb2_grpc.ProjectServiceStub(self.channel)

    @property
    def definitions(self) -> llm_definition_pb2_grpc.LlmDefinitionServiceStub:
        return llm_definition_pb2_grpc.LlmDefinitionServiceStub(self.channel)

    @property
    def instances(self) -> llm_instance_pb2_grpc.LlmInstanceServiceStub:
        return llm_instance_pb2_grpc.LlmInstanceServiceStub(self.channel)

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    async def create_user(self, handle: str, email: str | None = None, name: str = "") -> str:
        """Create a user as admin; return the user's key."""
        resp = await self.users.CreateUser(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(
                    user_handle=handle, name=name or handle.title(), email=email or f"{handle}@example.org"
                )
            ),
            metadata=ADMIN,
        )
        return str(resp.api_key)
