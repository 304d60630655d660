from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Embedding(_message.Message):
    __slots__ = ("text_id", "vector", "vector_dim", "instance", "text", "metadata")
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DIM_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text_id: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    vector_dim: int
    instance: str
    text: str
    metadata: _struct_pb2.Struct
    def __init__(self, text_id: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., vector_dim: _Optional[int] = ..., instance: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertEmbeddingsRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "embeddings")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class UpsertEmbeddingsResponse(_message.Message):
    __slots__ = ("text_ids", "count", "inserted", "replaced")
    TEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    text_ids: _containers.RepeatedScalarFieldContainer[str]
    count: int
    inserted: int
    replaced: int
    def __init__(self, text_ids: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., inserted: _Optional[int] = ..., replaced: _Optional[int] = ...) -> None: ...

class StreamUpsertEmbeddingsRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "embeddings")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class StreamUpsertEmbeddingsResponse(_message.Message):
    __slots__ = ("batches", "count", "inserted", "replaced")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    batches: int
    count: int
    inserted: int
    replaced: int
    def __init__(self, batches: _Optional[int] = ..., count: _Optional[int] = ..., inserted: _Optional[int] = ..., replaced: _Optional[int] = ...) -> None: ...

class GetEmbeddingRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "text_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    text_id: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., text_id: _Optional[str] = ...) -> None: ...

class GetEmbeddingResponse(_message.Message):
    __slots__ = ("embedding",)
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    embedding: Embedding
    def __init__(self, embedding: _Optional[_Union[Embedding, _Mapping]] = ...) -> None: ...

class ListEmbeddingsRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "page_size", "page_token", "include_vectors")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    page_size: int
    page_token: str
    include_vectors: bool
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ListEmbeddingsResponse(_message.Message):
    __slots__ = ("embeddings", "next_page_token")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    next_page_token: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteEmbeddingRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "text_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    text_id: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., text_id: _Optional[str] = ...) -> None: ...

class DeleteEmbeddingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteAllEmbeddingsRequest(_message.Message):
    __slots__ = ("owner", "project_handle")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ...) -> None: ...

class DeleteAllEmbeddingsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class QueryVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class MetadataCondition(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: _struct_pb2.Value
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class SearchSimilarRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "text_id", "vector", "text", "limit", "offset", "threshold", "exclude", "require", "include_text", "include_metadata")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TEXT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    text_id: str
    vector: QueryVector
    text: str
    limit: int
    offset: int
    threshold: float
    exclude: _containers.RepeatedCompositeFieldContainer[MetadataCondition]
    require: _containers.RepeatedCompositeFieldContainer[MetadataCondition]
    include_text: bool
    include_metadata: bool
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., text_id: _Optional[str] = ..., vector: _Optional[_Union[QueryVector, _Mapping]] = ..., text: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., threshold: _Optional[float] = ..., exclude: _Optional[_Iterable[_Union[MetadataCondition, _Mapping]]] = ..., require: _Optional[_Iterable[_Union[MetadataCondition, _Mapping]]] = ..., include_text: _Optional[bool] = ..., include_metadata: _Optional[bool] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("text_id", "similarity", "text", "metadata")
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text_id: str
    similarity: float
    text: str
    metadata: _struct_pb2.Struct
    def __init__(self, text_id: _Optional[str] = ..., similarity: _Optional[float] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchSimilarResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedTextsRequest(_message.Message):
    __slots__ = ("instance", "texts")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    instance: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedTextsResponse(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ...) -> None: ...

class TextItem(_message.Message):
    __slots__ = ("text_id", "text", "metadata")
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text_id: str
    text: str
    metadata: _struct_pb2.Struct
    def __init__(self, text_id: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertTextsRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "items")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    items: _containers.RepeatedCompositeFieldContainer[TextItem]
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., items: _Optional[_Iterable[_Union[TextItem, _Mapping]]] = ...) -> None: ...

class UpsertTextsResponse(_message.Message):
    __slots__ = ("text_ids", "count", "inserted", "replaced", "reused")
    TEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    text_ids: _containers.RepeatedScalarFieldContainer[str]
    count: int
    inserted: int
    replaced: int
    reused: int
    def __init__(self, text_ids: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., inserted: _Optional[int] = ..., replaced: _Optional[int] = ..., reused: _Optional[int] = ...) -> None: ...

class StreamUpsertTextsRequest(_message.Message):
    __slots__ = ("owner", "project_handle", "items")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    owner: str
    project_handle: str
    items: _containers.RepeatedCompositeFieldContainer[TextItem]
    def __init__(self, owner: _Optional[str] = ..., project_handle: _Optional[str] = ..., items: _Optional[_Iterable[_Union[TextItem, _Mapping]]] = ...) -> None: ...

class StreamUpsertTextsResponse(_message.Message):
    __slots__ = ("batches", "count", "inserted", "replaced", "reused")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    batches: int
    count: int
    inserted: int
    replaced: int
    reused: int
    def __init__(self, batches: _Optional[int] = ..., count: _Optional[int] = ..., inserted: _Optional[int] = ..., replaced: _Optional[int] = ..., reused: _Optional[int] = ...) -> None: ...
