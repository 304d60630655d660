"""Helpers shared by servicers: field masks and the caller's principal."""

from __future__ import annotations

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from vdb_grpc.auth import Principal, current_principal
from vdb_grpc.queries.shares import ShareRow
from vdb_grpc.v1 import common_pb2


def principal() -> Principal:
    """The caller of the RPC being served (set by the interceptor)."""
    return current_principal.get()


def update_fields(resource: Message, mask: FieldMask, identity_fields: frozenset[str]) -> set[str]:
    """The fields an Update should change.

    With a mask: its paths, minus a leading "<resource>." if a client wrote one. Without: every field set
    to a non-default value in ``resource``, except the fields that identify it.
    """
    if mask.paths:
        return {p.split(".", 1)[1] if "." in p else p for p in mask.paths}
    return {f.name for f, _ in resource.ListFields()} - identity_fields


def share_message(s: ShareRow) -> common_pb2.Share:
    """A stored share (of a project, instance or definition) as the API message."""
    return common_pb2.Share(user_handle=s.user_handle, role=s.role)
