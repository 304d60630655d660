"""A descriptor pool for server reflection that keeps the .proto comments.

The generated ``*_pb2.py`` modules drop source info, so reflection from the default pool shows messages
without their documentation. ``scripts/gen_protos.py`` also writes ``v1/descriptor_set.binpb`` (with
``--include_source_info``); this pool answers reflection from it, so ``grpcurl describe`` prints the comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

DESCRIPTOR_SET = Path(__file__).resolve().parent / "v1" / "descriptor_set.binpb"


def _drop_json_names(messages: Any) -> None:
    """Clear protoc's camelCase ``json_name``s so grpcurl prints and accepts the proto field names
    (``user_handle``), the names the API documents — as it does with descriptors from generated code."""
    for m in messages:
        for f in m.field:
            f.ClearField("json_name")
        _drop_json_names(m.nested_type)


class _File:
    """A file descriptor whose ``CopyToProto`` yields the proto with source info."""

    def __init__(self, pool: DocumentedPool, descriptor: Any) -> None:
        self._pool = pool
        self._descriptor = descriptor
        self.name: str = descriptor.name

    @property
    def dependencies(self) -> list[_File]:
        return [self._pool.file(d) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        stored = self._pool.protos.get(self.name)
        if stored is not None:
            proto.CopyFrom(stored)
        else:
            self._descriptor.CopyToProto(proto)


class DocumentedPool:
    """The subset of ``DescriptorPool`` that grpc_reflection uses, answering with documented files."""

    def __init__(self, path: Path = DESCRIPTOR_SET) -> None:
        file_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        for f in file_set.file:
            _drop_json_names(f.message_type)
        self.protos = {f.name: f for f in file_set.file}
        self._pool = descriptor_pool.DescriptorPool()
        for f in file_set.file:
            self._pool.Add(f)

    def file(self, descriptor: Any) -> _File:
        return _File(self, descriptor)

    def FindFileByName(self, name: str) -> _File:
        return self.file(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> _File:
        return self.file(self._pool.FindFileContainingSymbol(symbol))

    def FindMessageTypeByName(self, name: str) -> Any:
        return self._pool.FindMessageTypeByName(name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:
        return self._pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: Any) -> Any:
        return self._pool.FindAllExtensions(message)


class DocumentedPoolWithFallback(DocumentedPool):
    """``DocumentedPool`` for our files; the default pool for anything else (grpc.health, reflection)."""

    def __init__(self, path: Path = DESCRIPTOR_SET) -> None:
        super().__init__(path)
        self._default = descriptor_pool.Default()

    def FindFileByName(self, name: str) -> Any:
        try:
            return super().FindFileByName(name)
        except KeyError:
            return self._default.FindFileByName(name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return super().FindFileContainingSymbol(symbol)
        except KeyError:
            return self._default.FindFileContainingSymbol(symbol)

    def FindMessageTypeByName(self, name: str) -> Any:
        try:
            return super().FindMessageTypeByName(name)
        except KeyError:
            return self._default.FindMessageTypeByName(name)
