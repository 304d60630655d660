from google.protobuf import field_mask_pb2 as _field_mask_pb2
from vdb_grpc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("user_handle", "name", "email", "projects", "instances", "definitions")
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    user_handle: str
    name: str
    email: str
    projects: _containers.RepeatedCompositeFieldContainer[_common_pb2.Membership]
    instances: _containers.RepeatedCompositeFieldContainer[_common_pb2.Membership]
    definitions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Membership]
    def __init__(self, user_handle: _Optional[str] = ..., name: _Optional[str] = ..., email: _Optional[str] = ..., projects: _Optional[_Iterable[_Union[_common_pb2.Membership, _Mapping]]] = ..., instances: _Optional[_Iterable[_Union[_common_pb2.Membership, _Mapping]]] = ..., definitions: _Optional[_Iterable[_Union[_common_pb2.Membership, _Mapping]]] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user", "api_key")
    USER_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    user: User
    api_key: str
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., api_key: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_handle",)
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    user_handle: str
    def __init__(self, user_handle: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("user", "update_mask", "allow_missing")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    user: User
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ("user", "api_key", "created")
    USER_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    user: User
    api_key: str
    created: bool
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., api_key: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("user_handle", "force")
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    user_handle: str
    force: bool
    def __init__(self, user_handle: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("detached_projects",)
    DETACHED_PROJECTS_FIELD_NUMBER: _ClassVar[int]
    detached_projects: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, detached_projects: _Optional[_Iterable[str]] = ...) -> None: ...

class RotateUserKeyRequest(_message.Message):
    __slots__ = ("user_handle",)
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    user_handle: str
    def __init__(self, user_handle: _Optional[str] = ...) -> None: ...

class RotateUserKeyResponse(_message.Message):
    __slots__ = ("user_handle", "api_key")
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    user_handle: str
    api_key: str
    def __init__(self, user_handle: _Optional[str] = ..., api_key: _Optional[str] = ...) -> None: ...
