"""docs/conventions.md's counter rule: no message of the API has a 64-bit integer, so JSON shows numbers."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from vdb_grpc.v1 import (
    admin_pb2,
    api_standard_pb2,
    common_pb2,
    embedding_pb2,
    llm_definition_pb2,
    llm_instance_pb2,
    project_pb2,
    user_pb2,
)

MODULES = (
    admin_pb2, api_standard_pb2, common_pb2, embedding_pb2, llm_definition_pb2, llm_instance_pb2, project_pb2,
    user_pb2,
)  # fmt: skip
WIDE = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}  # fmt: skip


def all_messages():
    def walk(desc):
        yield desc
        for nested in desc.nested_types:
            yield from walk(nested)

    for module in MODULES:
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(desc)


def test_no_message_has_a_64_bit_integer():
    messages = list(all_messages())
    assert len(messages) > 40
    wide = [f"{m.full_name}.{f.name}" for m in messages for f in m.fields if f.type in WIDE]
    assert wide == [], "counters are int32 (docs/conventions.md): " + ", ".join(wide)


def test_counts_print_as_json_numbers():
    resp = embedding_pb2.StreamUpsertEmbeddingsResponse(batches=2, count=5, inserted=4, replaced=1)
    assert json_format.MessageToDict(resp, preserving_proto_field_name=True) == {
        "batches": 2, "count": 5, "inserted": 4, "replaced": 1,
    }  # fmt: skip
