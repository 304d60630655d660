from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiStandard(_message.Message):
    __slots__ = ("api_standard_handle", "description", "key_method", "key_field", "request_shape", "key_optional", "max_inputs")
    API_STANDARD_HANDLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KEY_METHOD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SHAPE_FIELD_NUMBER: _ClassVar[int]
    KEY_OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    api_standard_handle: str
    description: str
    key_method: str
    key_field: str
    request_shape: str
    key_optional: bool
    max_inputs: int
    def __init__(self, api_standard_handle: _Optional[str] = ..., description: _Optional[str] = ..., key_method: _Optional[str] = ..., key_field: _Optional[str] = ..., request_shape: _Optional[str] = ..., key_optional: _Optional[bool] = ..., max_inputs: _Optional[int] = ...) -> None: ...

class CreateApiStandardRequest(_message.Message):
    __slots__ = ("api_standard",)
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    api_standard: ApiStandard
    def __init__(self, api_standard: _Optional[_Union[ApiStandard, _Mapping]] = ...) -> None: ...

class CreateApiStandardResponse(_message.Message):
    __slots__ = ("api_standard",)
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    api_standard: ApiStandard
    def __init__(self, api_standard: _Optional[_Union[ApiStandard, _Mapping]] = ...) -> None: ...

class GetApiStandardRequest(_message.Message):
    __slots__ = ("api_standard_handle",)
    API_STANDARD_HANDLE_FIELD_NUMBER: _ClassVar[int]
    api_standard_handle: str
    def __init__(self, api_standard_handle: _Optional[str] = ...) -> None: ...

class GetApiStandardResponse(_message.Message):
    __slots__ = ("api_standard",)
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    api_standard: ApiStandard
    def __init__(self, api_standard: _Optional[_Union[ApiStandard, _Mapping]] = ...) -> None: ...

class ListApiStandardsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiStandardsResponse(_message.Message):
    __slots__ = ("api_standards", "next_page_token")
    API_STANDARDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_standards: _containers.RepeatedCompositeFieldContainer[ApiStandard]
    next_page_token: str
    def __init__(self, api_standards: _Optional[_Iterable[_Union[ApiStandard, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateApiStandardRequest(_message.Message):
    __slots__ = ("api_standard", "update_mask", "allow_missing")
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    api_standard: ApiStandard
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    def __init__(self, api_standard: _Optional[_Union[ApiStandard, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class UpdateApiStandardResponse(_message.Message):
    __slots__ = ("api_standard", "created")
    API_STANDARD_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    api_standard: ApiStandard
    created: bool
    def __init__(self, api_standard: _Optional[_Union[ApiStandard, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteApiStandardRequest(_message.Message):
    __slots__ = ("api_standard_handle",)
    API_STANDARD_HANDLE_FIELD_NUMBER: _ClassVar[int]
    api_standard_handle: str
    def __init__(self, api_standard_handle: _Optional[str] = ...) -> None: ...

class DeleteApiStandardResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
