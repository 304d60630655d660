from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Share(_message.Message):
    __slots__ = ("user_handle", "role")
    USER_HANDLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user_handle: str
    role: str
    def __init__(self, user_handle: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("owner", "handle", "role")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    handle: str
    role: str
    def __init__(self, owner: _Optional[str] = ..., handle: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...
