from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SanityCheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SanityFinding(_message.Message):
    __slots__ = ("check", "subject", "description")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    check: str
    subject: str
    description: str
    def __init__(self, check: _Optional[str] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class SanityCheckResponse(_message.Message):
    __slots__ = ("ok", "findings")
    OK_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    findings: _containers.RepeatedCompositeFieldContainer[SanityFinding]
    def __init__(self, ok: _Optional[bool] = ..., findings: _Optional[_Iterable[_Union[SanityFinding, _Mapping]]] = ...) -> None: ...

class ResetDatabaseRequest(_message.Message):
    __slots__ = ("confirm",)
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    confirm: str
    def __init__(self, confirm: _Optional[str] = ...) -> None: ...

class ResetDatabaseResponse(_message.Message):
    __slots__ = ("deleted_users", "deleted_projects", "deleted_embeddings", "deleted_instances", "deleted_definitions")
    DELETED_USERS_FIELD_NUMBER: _ClassVar[int]
    DELETED_PROJECTS_FIELD_NUMBER: _ClassVar[int]
    DELETED_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DELETED_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    DELETED_DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_users: int
    deleted_projects: int
    deleted_embeddings: int
    deleted_instances: int
    deleted_definitions: int
    def __init__(self, deleted_users: _Optional[int] = ..., deleted_projects: _Optional[int] = ..., deleted_embeddings: _Optional[int] = ..., deleted_instances: _Optional[int] = ..., deleted_definitions: _Optional[int] = ...) -> None: ...

class ReencryptApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReencryptApiKeysResponse(_message.Message):
    __slots__ = ("reencrypted", "encrypted_from_plaintext", "already_current", "failed", "failed_instances")
    REENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FROM_PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_CURRENT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILED_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    reencrypted: int
    encrypted_from_plaintext: int
    already_current: int
    failed: int
    failed_instances: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reencrypted: _Optional[int] = ..., encrypted_from_plaintext: _Optional[int] = ..., already_current: _Optional[int] = ..., failed: _Optional[int] = ..., failed_instances: _Optional[_Iterable[str]] = ...) -> None: ...
