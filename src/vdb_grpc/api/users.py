"""UserService servicer: proto ⇄ domain values, nothing else."""

from __future__ import annotations

import grpc

from vdb_grpc.api.convert import principal, update_fields
from vdb_grpc.domain.users import NewUser, Users
from vdb_grpc.queries.users import MembershipRow, UserRow
from vdb_grpc.v1 import common_pb2, user_pb2, user_pb2_grpc


def user_message(u: UserRow) -> user_pb2.User:
    """A stored user as the API message."""
    return user_pb2.User(user_handle=u.user_handle, name=u.name, email=u.email)


def _memberships(rows: list[MembershipRow]) -> list[common_pb2.Membership]:
    return [common_pb2.Membership(owner=m.owner, handle=m.handle, role=m.role) for m in rows]


def _new_user(u: user_pb2.User) -> NewUser:
    return NewUser(user_handle=u.user_handle, name=u.name, email=u.email)


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """gRPC adapter for ``Users``."""

    def __init__(self, users: Users) -> None:
        self._users = users

    async def CreateUser(
        self, request: user_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.CreateUserResponse:
        row, key = await self._users.create(principal(), _new_user(request.user))
        return user_pb2.CreateUserResponse(user=user_message(row), api_key=key)

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.GetUserResponse:
        d = await self._users.get(principal(), request.user_handle)
        msg = user_message(d.user)
        msg.projects.extend(_memberships(d.projects))
        msg.instances.extend(_memberships(d.instances))
        msg.definitions.extend(_memberships(d.definitions))
        return user_pb2.GetUserResponse(user=msg)

    async def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.ListUsersResponse:
        page = await self._users.list(principal(), request.page_size, request.page_token)
        return user_pb2.ListUsersResponse(
            users=[user_message(u) for u in page.users], next_page_token=page.next_page_token
        )

    async def UpdateUser(
        self, request: user_pb2.UpdateUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.UpdateUserResponse:
        fields = update_fields(request.user, request.update_mask, frozenset({"user_handle"}))
        result = await self._users.update(
            principal(), _new_user(request.user), fields, allow_missing=request.allow_missing
        )
        return user_pb2.UpdateUserResponse(
            user=user_message(result.user), api_key=result.api_key, created=result.created
        )

    async def DeleteUser(
        self, request: user_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.DeleteUserResponse:
        detached = await self._users.delete(principal(), request.user_handle, force=request.force)
        return user_pb2.DeleteUserResponse(detached_projects=detached)

    async def RotateUserKey(
        self, request: user_pb2.RotateUserKeyRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RotateUserKeyResponse:
        key = await self._users.rotate_key(principal(), request.user_handle)
        return user_pb2.RotateUserKeyResponse(user_handle=request.user_handle, api_key=key)
