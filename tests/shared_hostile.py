"""Helpers of the hostile-input, fuzzing and responsiveness tests: every RPC from the descriptors, raw calls,
pathological schemas and a snapshot of everything stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from vdb_grpc.server import SERVICE_NAMES

#: Tables whose contents a refused request must leave as they were.
TABLES = (
    "users",
    "api_standards",
    "llm_service_definitions",
    "llm_service_instances",
    "projects",
    "embeddings",
    "projects_shared_with",
)


@dataclass(frozen=True)
class Rpc:
    """One method of the API."""

    path: str
    method: MethodDescriptor
    request: type[Any]
    response: type[Any]

    @property
    def streams_requests(self) -> bool:
        return bool(self.method.client_streaming)


def all_rpcs() -> list[Rpc]:
    """Every RPC of every vdb_grpc service, from the descriptors (new ones are covered automatically)."""
    import vdb_grpc.v1  # noqa: F401 - registers the descriptors
    from vdb_grpc.v1 import (  # noqa: F401
        admin_pb2,
        api_standard_pb2,
        embedding_pb2,
        llm_definition_pb2,
        llm_instance_pb2,
        project_pb2,
        user_pb2,
    )

    pool = descriptor_pool.Default()
    out = []
    for name in SERVICE_NAMES:
        service = pool.FindServiceByName(name)
        for m in service.methods:
            out.append(
                Rpc(
                    f"/{service.full_name}/{m.name}",
                    m,
                    message_factory.GetMessageClass(m.input_type),
                    message_factory.GetMessageClass(m.output_type),
                )
            )
    return out


def string_fields(desc: Descriptor, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, list[FieldDescriptor]]]:
    """(path, chain of field descriptors) of every string field reachable from ``desc`` (well-known types and
    maps left out; Struct metadata is covered by its own tests)."""
    if depth > 4:
        return
    for fd in desc.fields:
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        if fd.type == FieldDescriptor.TYPE_STRING:
            yield path + ("[0]" if fd.is_repeated else ""), [fd]
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and not fd.message_type.GetOptions().map_entry:
            if fd.message_type.full_name.startswith("google.protobuf."):
                if fd.message_type.full_name == "google.protobuf.FieldMask":
                    yield path + ".paths[0]", [fd, fd.message_type.fields_by_name["paths"]]
                continue
            sub_prefix = path + ("[0]" if fd.is_repeated else "")
            for sub_path, chain in string_fields(fd.message_type, sub_prefix, depth + 1):
                yield sub_path, [fd, *chain]


def with_string(request_cls: type[Any], chain: list[FieldDescriptor], value: str) -> Any:
    """A request of ``request_cls`` whose string field at ``chain`` holds ``value``."""
    msg = request_cls()
    target = msg
    for fd in chain[:-1]:
        target = getattr(target, fd.name).add() if fd.is_repeated else getattr(target, fd.name)
    last = chain[-1]
    if last.is_repeated:
        getattr(target, last.name).append(value)
    else:
        setattr(target, last.name, value)
    return msg


async def call(channel: grpc.aio.Channel, rpc: Rpc, request: Any, metadata: Any, deadline: float = 30) -> Any:
    """Call ``rpc`` with one request message (or bytes), a stream of one for client-streaming methods."""
    serialize = (lambda b: b) if isinstance(request, bytes) else rpc.request.SerializeToString
    if rpc.streams_requests:
        stub = channel.stream_unary(
            rpc.path, request_serializer=serialize, response_deserializer=rpc.response.FromString
        )

        async def one() -> Any:
            yield request

        return await stub(one(), metadata=metadata, timeout=deadline)
    if rpc.method.server_streaming:  # pragma: no cover - the API has none today
        stub_s = channel.unary_stream(
            rpc.path, request_serializer=serialize, response_deserializer=rpc.response.FromString
        )
        return [x async for x in stub_s(request, metadata=metadata, timeout=deadline)]
    stub_u = channel.unary_unary(rpc.path, request_serializer=serialize, response_deserializer=rpc.response.FromString)
    return await stub_u(request, metadata=metadata, timeout=deadline)


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """Everything stored that a request could change (key hashes and contents of every table), as text."""
    out = {}
    for table in TABLES:
        rows = await pool.fetch(f"SELECT to_jsonb(t)::text AS j FROM {table} t ORDER BY 1")
        out[table] = sorted(r["j"] for r in rows)
    return out


# --- the issue's pathological schemas and their bigger brothers ----------------------------------------------


def doubling_schema(levels: int) -> str:
    """$defs whose allOf references the next level twice: validation work doubles per level."""
    defs: dict[str, Any] = {}
    for i in range(levels):
        defs[f"l{i}"] = {"allOf": [{"$ref": f"#/$defs/l{i + 1}"}, {"$ref": f"#/$defs/l{i + 1}"}]}
    defs[f"l{levels}"] = {"type": "object"}
    return json.dumps({"$defs": defs, "$ref": "#/$defs/l0"})


def nested_nots(n: int) -> str:
    return '{"not": ' * n + "{}" + "}" * n


def nested_properties(n: int) -> str:
    return '{"properties": {"a": ' * n + "{}" + "}}" * n


PATHOLOGICAL_SCHEMAS = {
    "doubling-20": doubling_schema(20),
    "doubling-40": doubling_schema(40),
    "2000-nots": nested_nots(2000),
    "20000-nots": nested_nots(20000),
    "400-properties": nested_properties(400),
    "4000-properties": nested_properties(4000),
    "huge-repeat": json.dumps({"properties": {"a": {"pattern": "a{4294967296}"}}}),
    "nested-quantifiers": json.dumps({"properties": {"a": {"pattern": "(a{1,1000}){1,1000}b"}}}),
    "lookahead": json.dumps({"properties": {"a": {"pattern": "(?=a)a"}}}),
    "self-loop": json.dumps({"anyOf": [{"type": "string"}, {"$ref": "#"}]}),
    "recursive-doubling": json.dumps(
        {
            "$defs": {"n": {"properties": {"a": {"allOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/n"}]}}}},
            "$ref": "#/$defs/n",
        }
    ),
    "too-large": json.dumps({"description": "x" * 100_000}),
}

#: Schemas the issue named that are valid and must stay cheap: (schema, metadata that is checked against it).
COSTLY_BUT_ALLOWED = {
    "backtracking-pattern": (
        json.dumps({"properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}),
        {"a": "a" * 28 + "!"},
    ),
    "backtracking-pattern-64k": (
        json.dumps({"properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}),
        {"a": "a" * 60_000 + "!"},
    ),
    "propertyNames": (json.dumps({"propertyNames": {"pattern": "^(a+)+$"}}), {"a" * 28 + "!": 1}),
    "patternProperties": (
        json.dumps({"patternProperties": {"^(a|a)+$": {"type": "string"}}}),
        {"a" * 28 + "!": 1, "aaaa": 5},
    ),
    "draft4-enum-4000": (
        json.dumps(
            {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "properties": {"k": {"enum": [{"v": i} for i in range(4000)]}},
            }
        ),
        {"k": {"v": -1}},
    ),
    "uniqueItems-4000": (
        json.dumps({"properties": {"k": {"type": "array", "uniqueItems": True}}}),
        {"k": [{"v": i} for i in range(4000)] + [{"v": 0}]},
    ),
}
