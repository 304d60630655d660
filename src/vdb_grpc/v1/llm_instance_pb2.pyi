from google.protobuf import field_mask_pb2 as _field_mask_pb2
from vdb_grpc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LlmInstance(_message.Message):
    __slots__ = ("owner", "instance_handle", "endpoint", "description", "api_standard", "model", "dimensions", "context_limit", "definition", "api_key", "has_api_key", "access_role")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    HAS_API_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCESS_ROLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    instance_handle: str
    endpoint: str
    description: str
    api_standard: str
    model: str
    dimensions: int
    context_limit: int
    definition: str
    api_key: str
    has_api_key: bool
    access_role: str
    def __init__(self, owner: _Optional[str] = ..., instance_handle: _Optional[str] = ..., endpoint: _Optional[str] = ..., description: _Optional[str] = ..., api_standard: _Optional[str] = ..., model: _Optional[str] = ..., dimensions: _Optional[int] = ..., context_limit: _Optional[int] = ..., definition: _Optional[str] = ..., api_key: _Optional[str] = ..., has_api_key: _Optional[bool] = ..., access_role: _Optional[str] = ...) -> None: ...

class CreateInstanceRequest(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: LlmInstance
    def __init__(self, instance: _Optional[_Union[LlmInstance, _Mapping]] = ...) -> None: ...

class CreateInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: LlmInstance
    def __init__(self, instance: _Optional[_Union[LlmInstance, _Mapping]] = ...) -> None: ...

class CreateInstanceFromDefinitionRequest(_message.Message):
    __slots__ = ("definition", "instance")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    definition: str
    instance: LlmInstance
    def __init__(self, definition: _Optional[str] = ..., instance: _Optional[_Union[LlmInstance, _Mapping]] = ...) -> None: ...

class CreateInstanceFromDefinitionResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: LlmInstance
    def __init__(self, instance: _Optional[_Union[LlmInstance, _Mapping]] = ...) -> None: ...

class GetInstanceRequest(_message.Message):
    __slots__ = ("owner", "instance_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    instance_handle: str
    def __init__(self, owner: _Optional[str] = ..., instance_handle: _Optional[str] = ...) -> None: ...

class GetInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: LlmInstance
    def __init__(self, instance: _Optional[_Union[LlmInstance, _Mapping]] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[LlmInstance]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[LlmInstance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateInstanceRequest(_message.Message):
    __slots__ = ("instance", "update_mask", "allow_missing", "clear_api_key")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    CLEAR_API_KEY_FIELD_NUMBER: _ClassVar[int]
    instance: LlmInstance
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    clear_api_key: bool
    def __init__(self, instance: _Optional[_Union[LlmInstance, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ..., clear_api_key: _Optional[bool] = ...) -> None: ...

class UpdateInstanceResponse(_message.Message):
    __slots__ = ("instance", "created")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    instance: LlmInstance
    created: bool
    def __init__(self, instance: _Optional[_Union[LlmInstance, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteInstanceRequest(_message.Message):
    __slots__ = ("owner", "instance_handle", "force")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    instance_handle: str
    force: bool
    def __init__(self, owner: _Optional[str] = ..., instance_handle: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteInstanceResponse(_message.Message):
    __slots__ = ("detached_projects",)
    DETACHED_PROJECTS_FIELD_NUMBER: _ClassVar[int]
    detached_projects: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, detached_projects: _Optional[_Iterable[str]] = ...) -> None: ...

class ShareInstanceRequest(_message.Message):
    __slots__ = ("owner", "instance_handle", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    instance_handle: str
    share: _common_pb2.Share
    def __init__(self, owner: _Optional[str] = ..., instance_handle: _Optional[str] = ..., share: _Optional[_Union[_common_pb2.Share, _Mapping]] = ...) -> None: ...

class ShareInstanceResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: _common_pb2.Share
    def __init__(self, share: _Optional[_Union[_common_pb2.Share, _Mapping]] = ...) -> None: ...

class UnshareInstanceRequest(_message.Message):
    __slots__ = ("owner", "instance_handle", "user_handle", "force")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    instance_handle: str
    user_handle: str
    force: bool
    def __init__(self, owner: _Optional[str] = ..., instance_handle: _Optional[str] = ..., user_handle: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class UnshareInstanceResponse(_message.Message):
    __slots__ = ("removed", "detached_projects")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    DETACHED_PROJECTS_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    detached_projects: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[bool] = ..., detached_projects: _Optional[_Iterable[str]] = ...) -> None: ...

class ListInstanceSharesRequest(_message.Message):
    __slots__ = ("owner", "instance_handle", "page_size", "page_token")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    instance_handle: str
    page_size: int
    page_token: str
    def __init__(self, owner: _Optional[str] = ..., instance_handle: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInstanceSharesResponse(_message.Message):
    __slots__ = ("shares", "next_page_token")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[_common_pb2.Share]
    next_page_token: str
    def __init__(self, shares: _Optional[_Iterable[_Union[_common_pb2.Share, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
