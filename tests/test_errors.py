"""The error table: every domain error maps to a status, with details; unexpected errors become INTERNAL."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from vdb_grpc import errors
from vdb_grpc.interceptors import STATUS_OF, rich_status, status_code_for, translate_exception


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


@pytest.mark.parametrize("cls", _all_subclasses(errors.VdbError))
def test_every_error_class_has_a_specific_status(cls):
    assert cls in STATUS_OF
    code = status_code_for(cls("boom"))
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def test_table():
    expected = {
        errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
        errors.NotFound: grpc.StatusCode.NOT_FOUND,
        errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
        errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
        errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
        errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
        errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
        errors.Aborted: grpc.StatusCode.ABORTED,
        errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    for cls, code in expected.items():
        assert status_code_for(cls("x")) == code


def test_subclass_maps_through_base():
    class Special(errors.NotFound):
        pass

    assert status_code_for(Special("x")) == grpc.StatusCode.NOT_FOUND


def test_details_are_attached():
    err = errors.VdbError(
        "bad",
        field_violations=[errors.FieldViolation("a.b", "is wrong")],
        preconditions=[errors.PreconditionViolation("IN_USE", "project:x/y", "used")],
        resource=errors.ResourceRef("user", "bob"),
    )
    st = rich_status(grpc.StatusCode.INVALID_ARGUMENT, err)
    assert st.code == 3 and st.message == "bad" and len(st.details) == 3
    br = error_details_pb2.BadRequest()
    st.details[0].Unpack(br)
    assert br.field_violations[0].field == "a.b"


def test_infrastructure_errors_translate():
    assert isinstance(translate_exception(ConnectionRefusedError()), errors.Unavailable)
    assert isinstance(translate_exception(asyncpg.exceptions.QueryCanceledError("x")), errors.DeadlineExceeded)
    assert isinstance(translate_exception(asyncpg.exceptions.SerializationError("x")), errors.Aborted)
    assert translate_exception(ZeroDivisionError()) is None
    assert translate_exception(asyncpg.exceptions.UndefinedTableError("x")) is None
