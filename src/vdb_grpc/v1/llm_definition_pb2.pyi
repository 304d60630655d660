from google.protobuf import field_mask_pb2 as _field_mask_pb2
from vdb_grpc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LlmDefinition(_message.Message):
    __slots__ = ("owner", "definition_handle", "endpoint", "description", "api_standard", "model", "dimensions", "context_limit", "is_public")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    IS_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    owner: str
    definition_handle: str
    endpoint: str
    description: str
    api_standard: str
    model: str
    dimensions: int
    context_limit: int
    is_public: bool
    def __init__(self, owner: _Optional[str] = ..., definition_handle: _Optional[str] = ..., endpoint: _Optional[str] = ..., description: _Optional[str] = ..., api_standard: _Optional[str] = ..., model: _Optional[str] = ..., dimensions: _Optional[int] = ..., context_limit: _Optional[int] = ..., is_public: _Optional[bool] = ...) -> None: ...

class CreateDefinitionRequest(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: LlmDefinition
    def __init__(self, definition: _Optional[_Union[LlmDefinition, _Mapping]] = ...) -> None: ...

class CreateDefinitionResponse(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: LlmDefinition
    def __init__(self, definition: _Optional[_Union[LlmDefinition, _Mapping]] = ...) -> None: ...

class GetDefinitionRequest(_message.Message):
    __slots__ = ("owner", "definition_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    definition_handle: str
    def __init__(self, owner: _Optional[str] = ..., definition_handle: _Optional[str] = ...) -> None: ...

class GetDefinitionResponse(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: LlmDefinition
    def __init__(self, definition: _Optional[_Union[LlmDefinition, _Mapping]] = ...) -> None: ...

class ListDefinitionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDefinitionsResponse(_message.Message):
    __slots__ = ("definitions", "next_page_token")
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    definitions: _containers.RepeatedCompositeFieldContainer[LlmDefinition]
    next_page_token: str
    def __init__(self, definitions: _Optional[_Iterable[_Union[LlmDefinition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateDefinitionRequest(_message.Message):
    __slots__ = ("definition", "update_mask", "allow_missing")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    definition: LlmDefinition
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    def __init__(self, definition: _Optional[_Union[LlmDefinition, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class UpdateDefinitionResponse(_message.Message):
    __slots__ = ("definition", "created")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    definition: LlmDefinition
    created: bool
    def __init__(self, definition: _Optional[_Union[LlmDefinition, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteDefinitionRequest(_message.Message):
    __slots__ = ("owner", "definition_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    definition_handle: str
    def __init__(self, owner: _Optional[str] = ..., definition_handle: _Optional[str] = ...) -> None: ...

class DeleteDefinitionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShareDefinitionRequest(_message.Message):
    __slots__ = ("owner", "definition_handle", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    definition_handle: str
    share: _common_pb2.Share
    def __init__(self, owner: _Optional[str] = ..., definition_handle: _Optional[str] = ..., share: _Optional[_Union[_common_pb2.Share, _Mapping]] = ...) -> None: ...

class ShareDefinitionResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: _common_pb2.Share
    def __init__(self, share: _Optional[_Union[_common_pb2.Share, _Mapping]] = ...) -> None: ...

class UnshareDefinitionRequest(_message.Message):
    __slots__ = ("owner", "definition_handle", "user_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    definition_handle: str
    user_handle: str
    def __init__(self, owner: _Optional[str] = ..., definition_handle: _Optional[str] = ..., user_handle: _Optional[str] = ...) -> None: ...

class UnshareDefinitionResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class ListDefinitionSharesRequest(_message.Message):
    __slots__ = ("owner", "definition_handle", "page_size", "page_token")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    definition_handle: str
    page_size: int
    page_token: str
    def __init__(self, owner: _Optional[str] = ..., definition_handle: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDefinitionSharesResponse(_message.Message):
    __slots__ = ("shares", "next_page_token")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[_common_pb2.Share]
    next_page_token: str
    def __init__(self, shares: _Optional[_Iterable[_Union[_common_pb2.Share, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
