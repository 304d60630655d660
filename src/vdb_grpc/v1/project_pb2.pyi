from google.protobuf import field_mask_pb2 as _field_mask_pb2
from vdb_grpc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Project(_message.Message):
    __slots__ = ("owner", "project_handle", "description", "metadata_schema", "instance", "public_read", "role", "number_of_embeddings", "shares", "instance_missing")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_READ_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_MISSING_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    description: str
    metadata_schema: str
    instance: str
    public_read: bool
    role: str
    number_of_embeddings: int
    shares: _containers.RepeatedCompositeFieldContainer[_common_pb2.Share]
    instance_missing: bool
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., description: _Optional[str] = ..., metadata_schema: _Optional[str] = ..., instance: _Optional[str] = ..., public_read: _Optional[bool] = ..., role: _Optional[str] = ..., number_of_embeddings: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[_common_pb2.Share, _Mapping]]] = ..., instance_missing: _Optional[bool] = ...) -> None: ...

class CreateProjectRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class CreateProjectResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class GetProjectRequest(_message.Message):
    __slots__ = ("owner", "project_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ...) -> None: ...

class GetProjectResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class ListProjectsRequest(_message.Message):
    __slots__ = ("owner", "include_public", "page_size", "page_token")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    include_public: bool
    page_size: int
    page_token: str
    def __init__(self, owner: _Optional[str] = ..., include_public: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProjectsResponse(_message.Message):
    __slots__ = ("projects", "next_page_token")
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[Project]
    next_page_token: str
    def __init__(self, projects: _Optional[_Iterable[_Union[Project, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateProjectRequest(_message.Message):
    __slots__ = ("project", "update_mask", "allow_missing")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    project: Project
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class UpdateProjectResponse(_message.Message):
    __slots__ = ("project", "created")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    project: Project
    created: bool
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteProjectRequest(_message.Message):
    __slots__ = ("owner", "project_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ...) -> None: ...

class DeleteProjectResponse(_message.Message):
    __slots__ = ("deleted_embeddings",)
    DELETED_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    deleted_embeddings: int
    def __init__(self, deleted_embeddings: _Optional[int] = ...) -> None: ...

class ShareProjectRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    share: _common_pb2.Share
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., share: _Optional[_Union[_common_pb2.Share, _Mapping]] = ...) -> None: ...

class ShareProjectResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: _common_pb2.Share
    def __init__(self, share: _Optional[_Union[_common_pb2.Share, _Mapping]] = ...) -> None: ...

class UnshareProjectRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "user_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    user_handle: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., user_handle: _Optional[str] = ...) -> None: ...

class UnshareProjectResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProjectSharesRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "page_size", "page_token")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    page_size: int
    page_token: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProjectSharesResponse(_message.Message):
    __slots__ = ("shares", "next_page_token")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[_common_pb2.Share]
    next_page_token: str
    def __init__(self, shares: _Optional[_Iterable[_Union[_common_pb2.Share, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TransferProjectRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "new_owner")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NEW_OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    new_owner: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., new_owner: _Optional[str] = ...) -> None: ...

class TransferProjectResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...
