"""Hostile input (issue 11, defects 1, 3 and 4): every example and its bigger brothers ends in INVALID_ARGUMENT
(or a fast, correct answer), never INTERNAL/UNKNOWN/RESOURCE_EXHAUSTED, and stores nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from embedding_helpers import World, emb, make_world
from google.protobuf import struct_pb2
from harness import ADMIN, ANON, field_violations, rpc_error
from shared_hostile import (
    COSTLY_BUT_ALLOWED,
    PATHOLOGICAL_SCHEMAS,
    all_rpcs,
    call,
    snapshot,
    string_fields,
    with_string,
)

from vdb_grpc import errors
from vdb_grpc.interceptors import translate_exception
from vdb_grpc.v1 import embedding_pb2 as pb
from vdb_grpc.v1 import project_pb2 as ppb
from vdb_grpc.v1 import user_pb2 as upb

#: What these tests send as keys are attack inputs, not secrets (tests/secrets_scan.py).
pytestmark = pytest.mark.adversarial_values

C = grpc.StatusCode
#: Generous: each of these answers in milliseconds; a stall of seconds is the bug.
FAST = 3.0


@pytest.fixture
async def world(vdb: Any) -> World:
    return await make_world(vdb)


def _nul_cases() -> list[Any]:
    cases = []
    for rpc in all_rpcs():
        for path, chain in string_fields(rpc.request.DESCRIPTOR):
            cases.append(pytest.param(rpc, path, chain, id=f"{rpc.method.name}:{path}"))
    return cases


NUL_CASES = _nul_cases()


def test_every_rpc_has_string_fields_covered() -> None:
    # the list is generated from the descriptors: a new RPC or field is covered without touching this file
    assert len({c.values[0].path for c in NUL_CASES}) >= 40
    assert any(c.values[1] == "user.email" for c in NUL_CASES)
    assert any(c.values[1] == "embeddings[0].text_id" for c in NUL_CASES)
    assert any(c.values[1] == "exclude[0].key" for c in NUL_CASES)


async def _nul_refusals(world: World, wire: Callable[[Any], Any], callers: tuple[Any, ...]) -> list[str]:
    """Every NUL case (its request passed through ``wire``) not refused with INVALID_ARGUMENT naming its field."""
    wrong: list[str] = []
    for case in NUL_CASES:
        rpc, path, chain = case.values
        request = wire(with_string(rpc.request, chain, "ab\x00cd"))
        for md in callers:
            try:
                await call(world.vdb.channel, rpc, request, md)
                wrong.append(f"{case.id}: OK")
            except grpc.aio.AioRpcError as err:
                expected = (path, "must not contain NUL characters (PostgreSQL text cannot hold them)")
                if err.code() != C.INVALID_ARGUMENT or expected not in field_violations(err):
                    wrong.append(f"{case.id}: {err.code().name} {err.details()}")
    return wrong


async def test_nul_in_every_string_field_is_invalid_argument_naming_it(world: World) -> None:
    # one server and database for all ~180 fields x 2 callers (a fresh one per case would take minutes)
    before = await snapshot(world.vdb.pool)
    assert await _nul_refusals(world, lambda request: request, (ADMIN, ANON)) == []
    assert await snapshot(world.vdb.pool) == before


def _padded(request: Any, size: int = 300 * 1024) -> bytes:
    """``request``'s wire form followed by an unknown field of ``size`` zero bytes: large enough for the
    interceptor's raw scan (``limits.scan_wire``) to decide whether a string field holds a NUL."""
    return request.SerializeToString() + b"\xc2\x3e" + _varint(size) + b"\x00" * size  # field 1000, wire type 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def test_nul_in_every_string_field_of_a_large_request_is_found_too(world: World) -> None:
    """Large requests are not walked field by field when their raw scan finds no string holding a 0x00 byte:
    the scan must find every NUL the walk would (the padding, an unknown field full of zeros, holds no string)."""
    before = await snapshot(world.vdb.pool)
    assert await _nul_refusals(world, _padded, (ADMIN,)) == []
    assert await snapshot(world.vdb.pool) == before


def test_the_raw_scan_skips_vectors_but_not_strings_or_metadata() -> None:
    from vdb_grpc.limits import scan_wire

    desc = pb.UpsertEmbeddingsRequest.DESCRIPTOR
    items = [pb.Embedding(text_id=f"t{i}", vector=[0.0, 1.0, 2.0, 0.5] * 96, text="plain") for i in range(500)]
    clean = pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=items)
    raw = clean.SerializeToString()
    assert b"\x00" in raw and len(raw) > 256 * 1024
    assert scan_wire(raw, desc, 256 * 1024).may_hold_nul is False
    items[499].text = "late\x00"
    assert scan_wire(pb.UpsertEmbeddingsRequest(embeddings=items).SerializeToString(), desc, 256 * 1024).may_hold_nul
    items[499].text = "plain"
    assert scan_wire(raw[:-7], desc, 256 * 1024).may_hold_nul  # truncated: the walk decides (decoding fails)

    def may_hold_nul(metadata: dict[str, Any]) -> bool:
        items[250].metadata.Clear()
        items[250].metadata.update(metadata)
        request = pb.UpsertEmbeddingsRequest(embeddings=items).SerializeToString()
        return scan_wire(request, desc, 256 * 1024).may_hold_nul

    # Numbers, nulls and booleans are full of zero bytes but hold no string: no walk for them (it once cost an
    # upload with numeric metadata more than the rest of its checks together).
    assert not may_hold_nul({"year": 1.0, "page": 0, "none": None, "flag": False, "n": [0, 0.5, {"z": 0}]})
    assert not may_hold_nul({"title": "plain", "nested": {"list": ["a", 2, None]}})
    # A NUL in a key or a string value, however deep, is found.
    assert may_hold_nul({"year": 1.0, "ti\x00tle": "plain"})
    assert may_hold_nul({"year": 1.0, "title": "pla\x00in"})
    assert may_hold_nul({"n": [0, {"deep": [None, "a\x00"]}]})
    assert may_hold_nul({"\x00": 0})


def test_the_raw_scan_leaves_structs_nested_beyond_protobufs_limit_to_the_decoder() -> None:
    """A Struct nested deeper than protobuf decodes ends the scan without an error (the decoder refuses it next),
    and an oversized Struct is named by its path wherever it is."""
    from google.protobuf import struct_pb2

    from vdb_grpc.limits import SCAN_MAX_DEPTH, scan_wire

    def field(tag: int, body: bytes) -> bytes:
        return bytes([tag]) + _varint(len(body)) + body

    zero = field(0x0A, struct_pb2.Value(number_value=0).SerializeToString())  # ListValue.values: 0.0
    value = struct_pb2.Value(string_value="x").SerializeToString()
    for _ in range(SCAN_MAX_DEPTH):  # Value.list_value -> ListValue.values, two messages a level
        value = field(0x32, field(0x0A, value) + zero)
    metadata = field(0x0A, field(0x0A, b"deep") + field(0x12, value))  # Struct.fields: {"deep": value}
    raw = field(0x1A, field(0x0A, b"t") + field(0x32, metadata))  # UpsertEmbeddingsRequest.embeddings[0]
    with pytest.raises(Exception, match=r"(?i)depth"):
        pb.UpsertEmbeddingsRequest.FromString(raw)  # what the decoder does with it next
    scan = scan_wire(raw, pb.UpsertEmbeddingsRequest.DESCRIPTOR, 1 << 20)
    assert scan.oversized is None and scan.may_hold_nul  # undecided: the decoder and the walk decide
    big = pb.Embedding(text_id="u")
    big.metadata.update({f"k{i}": i for i in range(2000)})
    raw = pb.UpsertEmbeddingsRequest(embeddings=[pb.Embedding(text_id="a"), big]).SerializeToString()
    scan = scan_wire(raw, pb.UpsertEmbeddingsRequest.DESCRIPTOR, 1024)
    assert scan.oversized is not None and scan.oversized[0] == "embeddings[1].metadata"


async def test_nul_in_metadata_keys_values_and_filter_values(world: World) -> None:
    before = await snapshot(world.vdb.pool)
    for metadata, path in (
        ({"k\x00": 1}, "embeddings[0].metadata[key 'k\\x00']"),
        ({"a": {"b": ["x", "\x00"]}}, "embeddings[0].metadata.a.b[1]"),
    ):
        err = await rpc_error(
            world.vdb.embeddings.UpsertEmbeddings(
                pb.UpsertEmbeddingsRequest(
                    owner="alice", project_handle="proj", embeddings=[emb("a", metadata=metadata)]
                ),
                metadata=world.md("alice"),
            ),
            C.INVALID_ARGUMENT,
        )
        assert field_violations(err)[0][0] == path
    value = struct_pb2.Value(string_value="x\x00")
    req = pb.SearchSimilarRequest(
        owner="alice", project_handle="pub", text_id="a", require=[pb.MetadataCondition(key="k", value=value)]
    )
    err = await rpc_error(world.vdb.embeddings.SearchSimilar(req, metadata=ANON), C.INVALID_ARGUMENT)
    assert field_violations(err)[0][0] == "require[0].value"
    assert await snapshot(world.vdb.pool) == before


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("which", ["exclude", "require"])
async def test_non_finite_condition_values_are_invalid_argument(world: World, value: float, which: str) -> None:
    cond = pb.MetadataCondition(key="year", value=struct_pb2.Value(number_value=value))
    nested = pb.MetadataCondition(
        key="a", value=struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=value)]))
    )
    for c in (cond, nested):
        req = pb.SearchSimilarRequest(
            owner="alice", project_handle="pub", vector=pb.QueryVector(values=[1, 0, 0, 0]), **{which: [c]}
        )
        err = await rpc_error(world.vdb.embeddings.SearchSimilar(req, metadata=ANON), C.INVALID_ARGUMENT)
        assert field_violations(err) == [(f"{which}[0].value", "holds NaN or infinity, which JSON cannot represent")]


def _nested_struct(levels: int) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    inner = s
    for _ in range(levels - 1):
        inner = inner.fields["a"].struct_value
    inner.fields["a"].string_value = "x"
    return s


async def test_deep_metadata_is_refused_naming_the_limit(world: World) -> None:
    before = await snapshot(world.vdb.pool)
    item = pb.Embedding(text_id="deep", vector=[1, 0, 0, 0])
    item.metadata.CopyFrom(_nested_struct(17))  # VDB_MAX_METADATA_DEPTH is 16
    err = await rpc_error(
        world.vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[item]),
            metadata=world.md("alice"),
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "embeddings[0].metadata"
    assert "VDB_MAX_METADATA_DEPTH" in err.details()
    item.metadata.CopyFrom(_nested_struct(16))
    await world.vdb.embeddings.UpsertEmbeddings(
        pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[item]), metadata=world.md("alice")
    )
    assert await world.count() == 1
    assert (await snapshot(world.vdb.pool))["users"] == before["users"]


@pytest.mark.parametrize("levels", [33, 40, 90])
async def test_struct_nested_beyond_protobufs_limit_is_invalid_argument_not_unknown(world: World, levels: int) -> None:
    # protobuf refuses to decode Structs nested ~33+ levels: the interceptor turns that into INVALID_ARGUMENT
    before = await snapshot(world.vdb.pool)
    item = pb.Embedding(text_id="deep", vector=[1, 0, 0, 0])
    raw = pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj")
    # build the bytes by hand: python protobuf refuses to serialize what it could not parse either
    inner = b""
    for _ in range(levels):
        value = b"\x2a" + _varint(len(inner)) + inner  # Value.struct_value = 5
        entry = b"\x0a\x01a" + b"\x12" + _varint(len(value)) + value  # map entry: key "a", value
        inner = b"\x0a" + _varint(len(entry)) + entry  # Struct.fields = 1
    item_bytes = (
        item.SerializeToString()
        + _tag(pb.Embedding.DESCRIPTOR.fields_by_name["metadata"].number)
        + _varint(len(inner))
        + inner
    )
    body = raw.SerializeToString() + _tag(3) + _varint(len(item_bytes)) + item_bytes
    rpc = next(r for r in all_rpcs() if r.method.name == "UpsertEmbeddings")
    assert pb.UpsertEmbeddingsRequest.DESCRIPTOR.fields_by_name["embeddings"].number == 3
    err = await rpc_error(call(world.vdb.channel, rpc, body, world.md("alice")), C.INVALID_ARGUMENT)
    assert "cannot be decoded" in err.details()
    assert await snapshot(world.vdb.pool) == before


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _tag(field: int) -> bytes:
    return _varint(field << 3 | 2)


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\x02\xff\xfe",  # user_handle: invalid UTF-8
        b"\x0a\x03\xed\xa0\x80",  # user_handle: an encoded lone surrogate (invalid UTF-8)
        b"\x0a\x50abc",  # length beyond the end
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an overlong varint tag
        b"\x0b",  # a start-group tag without end
    ],
    ids=["invalid-utf8", "lone-surrogate", "truncated", "overlong-varint", "open-group"],
)
@pytest.mark.parametrize(
    "method",
    [
        "GetUser",
        "DeleteUser",
        "CreateUser",
        "ListProjects",
        "StreamUpsertEmbeddings",
        "SearchSimilar",
        "EmbedTexts",
        "UpsertTexts",
        "StreamUpsertTexts",
    ],
)
async def test_undecodable_requests_are_invalid_argument(world: World, body: bytes, method: str) -> None:
    before = await snapshot(world.vdb.pool)
    rpc = next(r for r in all_rpcs() if r.method.name == method)
    for md in (ADMIN, ANON):
        err = await rpc_error(call(world.vdb.channel, rpc, body, md), C.INVALID_ARGUMENT)
        assert "cannot be decoded" in err.details()
    assert await snapshot(world.vdb.pool) == before


async def test_page_tokens_bounded_and_malformed_are_invalid_argument(world: World) -> None:
    import base64

    def token(obj_text: str) -> str:
        return base64.urlsafe_b64encode(obj_text.encode()).decode().rstrip("=")

    deep = token('{"l": "users", "k": ' + "[" * 5000 + "]" * 5000 + "}")
    shallow_deep = token('{"l": "users", "k": ' + "[" * 300 + "]" * 300 + "}")
    cases = {
        "5000-arrays": (deep, "VDB_MAX_PAGE_TOKEN_CHARS"),
        "300-arrays": (shallow_deep, "is not a token returned by this list"),
        "nul": (token('{"l": "users", "k": ["a\\u0000"]}'), "is not a token returned by this list"),
        "object-key": (token('{"l": "users", "k": [{"a": 1}]}'), "is not a token returned by this list"),
        "huge-int": (token('{"l": "users", "k": [' + "9" * 30 + "]}"), "is not a token returned by this list"),
        "not-base64": ("%%%", "is not a token returned by this list"),
        "not-json": (token("{nope"), "is not a token returned by this list"),
        "huge-exponent": (token('{"l": "users", "k": [1e999999]}'), "is not a token returned by this list"),
    }
    for name, (tok, words) in cases.items():
        for call_ in (
            world.vdb.users.ListUsers(upb.ListUsersRequest(page_token=tok), metadata=ADMIN),
            world.vdb.projects.ListProjects(
                ppb.ListProjectsRequest(page_token=tok, include_public=True), metadata=ANON
            ),
            world.vdb.embeddings.ListEmbeddings(
                pb.ListEmbeddingsRequest(owner="alice", project_handle="pub", page_token=tok), metadata=ANON
            ),
        ):
            err = await rpc_error(call_, C.INVALID_ARGUMENT)
            assert field_violations(err)[0][0] == "page_token", name
            assert words in err.details(), (name, err.details())


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL_SCHEMAS))
async def test_pathological_schemas_are_refused_fast(world: World, name: str) -> None:
    before = await snapshot(world.vdb.pool)
    schema = PATHOLOGICAL_SCHEMAS[name]
    for request in (
        world.vdb.projects.CreateProject(
            ppb.CreateProjectRequest(
                project=ppb.Project(project_handle="evil", instance="inst", metadata_schema=schema)
            ),
            metadata=world.md("alice"),
        ),
        world.vdb.projects.UpdateProject(
            ppb.UpdateProjectRequest(
                project=ppb.Project(owner="alice", project_handle="proj", metadata_schema=schema),
                update_mask={"paths": ["metadata_schema"]},
            ),
            metadata=world.md("alice"),
        ),
    ):
        started = time.monotonic()
        err = await rpc_error(request, C.INVALID_ARGUMENT)
        assert time.monotonic() - started < FAST
        assert field_violations(err)[0][0] == "project.metadata_schema"
    assert await snapshot(world.vdb.pool) == before


@pytest.mark.parametrize("name", sorted(COSTLY_BUT_ALLOWED))
async def test_costly_schema_examples_validate_fast(world: World, name: str) -> None:
    schema, metadata = COSTLY_BUT_ALLOWED[name]
    items = [emb(f"t{i}", metadata=metadata) for i in range(20)]  # (building Structs is slow on the client)
    started = time.monotonic()
    await world.vdb.projects.CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(project_handle="costly", instance="inst", metadata_schema=schema)),
        metadata=world.md("alice"),
    )
    err = await rpc_error(
        world.vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(owner="alice", project_handle="costly", embeddings=items),
            metadata=world.md("alice"),
        ),
        C.INVALID_ARGUMENT,
    )
    assert "does not match the project's metadata_schema" in err.details()
    assert time.monotonic() - started < FAST
    assert await world.vdb.pool.fetchval("SELECT count(*) FROM embeddings") == 0


@pytest.mark.slow
async def test_the_issues_33_mb_metadata_is_refused_before_decoding(world: World) -> None:
    # 1.5 million keys: protobuf alone would parse them for ~35 s holding the GIL; refused from the wire sizes.
    # (slow: the client needs ~50 s to build and send it)
    await _refused_by_size(world, [{f"k{i}": "v" * 10 for i in range(1_500_000)}])


async def test_huge_metadata_is_refused_naming_the_limit(world: World) -> None:
    # 100,000 keys (refused from the wire sizes, before decoding), and one just over the 64 KiB default
    await _refused_by_size(world, [{f"k{i}": "v" * 10 for i in range(100_000)}, {"a": "x" * 70_000}])


async def _refused_by_size(world: World, values: list[dict[str, Any]]) -> None:
    before = await snapshot(world.vdb.pool)
    for metadata in values:
        request = pb.UpsertEmbeddingsRequest(
            owner="alice", project_handle="proj", embeddings=[emb("big", metadata=metadata)]
        )
        started = time.monotonic()
        err = await rpc_error(
            world.vdb.embeddings.UpsertEmbeddings(request, metadata=world.md("alice"), timeout=120),
            C.INVALID_ARGUMENT,
        )
        assert "VDB_MAX_METADATA_BYTES" in err.details() and field_violations(err)[0][0] == "embeddings[0].metadata"
        assert time.monotonic() - started < 10
    assert await snapshot(world.vdb.pool) == before


async def test_overlong_text_is_refused_naming_the_limit(world: World) -> None:
    err = await rpc_error(
        world.vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(
                owner="alice", project_handle="proj", embeddings=[emb("t", text="x" * 1_000_001)]
            ),
            metadata=world.md("alice"),
        ),
        C.INVALID_ARGUMENT,
    )
    assert "VDB_MAX_TEXT_CHARS" in err.details() and field_violations(err)[0][0] == "embeddings[0].text"
    assert await world.count() == 0


@pytest.mark.parametrize("length", [7_000, 100_000, 1_000_000])
async def test_overlong_values_are_echoed_short(world: World, length: int) -> None:
    handle = "h" * length
    calls = [
        world.vdb.users.GetUser(upb.GetUserRequest(user_handle=handle), metadata=ADMIN),
        world.vdb.users.DeleteUser(upb.DeleteUserRequest(user_handle=handle), metadata=ADMIN),
        world.vdb.users.RotateUserKey(upb.RotateUserKeyRequest(user_handle=handle), metadata=ADMIN),
        world.vdb.users.CreateUser(
            upb.CreateUserRequest(user=upb.User(user_handle=handle, name="n", email="a@b.cd")), metadata=ADMIN
        ),
        world.vdb.projects.GetProject(ppb.GetProjectRequest(owner=handle, project_handle="p"), metadata=ANON),
        world.vdb.embeddings.SearchSimilar(
            pb.SearchSimilarRequest(owner="alice", project_handle="pub", text_id=handle), metadata=ANON
        ),
        world.vdb.embeddings.GetEmbedding(
            pb.GetEmbeddingRequest(owner="alice", project_handle="pub", text_id=handle), metadata=ANON
        ),
        world.vdb.embeddings.SearchSimilar(
            pb.SearchSimilarRequest(
                owner="alice",
                project_handle="pub",
                text_id="x",
                exclude=[pb.MetadataCondition(key=handle + "..", value=struct_pb2.Value(string_value="v"))],
            ),
            metadata=ANON,
        ),
        world.vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(
                owner="alice", project_handle="proj", embeddings=[emb(handle), emb("ok", instance=handle)]
            ),
            metadata=world.md("alice"),
        ),
        world.vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance=handle, texts=["x"]), metadata=world.md("alice")),
        world.vdb.embeddings.EmbedTexts(
            pb.EmbedTextsRequest(instance=f"{handle}/inst", texts=["x"]), metadata=world.md("alice")
        ),
        world.vdb.embeddings.UpsertTexts(
            pb.UpsertTextsRequest(owner="alice", project_handle="proj", items=[pb.TextItem(text_id=handle, text="x")]),
            metadata=world.md("alice"),
        ),
        world.vdb.embeddings.StreamUpsertTexts(
            iter([pb.StreamUpsertTextsRequest(owner="alice", project_handle=handle, items=[])]),
            metadata=world.md("alice"),
        ),
        world.vdb.embeddings.SearchSimilar(
            pb.SearchSimilarRequest(owner=handle, project_handle="pub", text="x"), metadata=world.md("alice")
        ),
    ]
    for c in calls:
        err = await rpc_error(c, C.INVALID_ARGUMENT)
        assert len(err.details()) <= 1000
        assert all(len(d) <= 500 for _, d in field_violations(err))
    assert await world.count() == 0


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.CharacterNotInRepertoireError("SECRET-VALUE"),
        asyncpg.exceptions.UntranslatableCharacterError("SECRET-VALUE"),
        asyncpg.exceptions.InvalidTextRepresentationError("SECRET-VALUE"),
        asyncpg.exceptions.NumericValueOutOfRangeError("SECRET-VALUE"),
        asyncpg.exceptions.StringDataRightTruncationError("SECRET-VALUE"),
        asyncpg.exceptions.DataError("SECRET-VALUE"),
        asyncpg.exceptions._base.DataError("SECRET-VALUE"),
        RecursionError("maximum recursion depth exceeded"),
        OverflowError("the repetition number is too large"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_data_exceptions_map_to_invalid_argument_by_class(exc: BaseException) -> None:
    err = translate_exception(exc)
    assert isinstance(err, errors.InvalidArgument)
    assert str(exc) not in err.message  # never the database's message (it may quote the value)


async def test_a_streamed_message_refused_at_the_boundary_fails_as_its_batch(world: World) -> None:
    # batches 0 and 1 commit; message 2 holds a NUL (refused by the interceptor before the domain sees it): the
    # stream ends with batch 2's error, saying what was committed, as for any other failing batch
    from embedding_helpers import error_info

    messages = [
        pb.StreamUpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[emb("s0")]),
        pb.StreamUpsertEmbeddingsRequest(embeddings=[emb("s1")]),
        pb.StreamUpsertEmbeddingsRequest(embeddings=[emb("s2"), emb("bad\x00")]),
        pb.StreamUpsertEmbeddingsRequest(embeddings=[emb("s3")]),
    ]
    err = await rpc_error(
        world.vdb.embeddings.StreamUpsertEmbeddings(iter(messages), metadata=world.md("alice")), C.INVALID_ARGUMENT
    )
    assert err.details().startswith("batch 2: embeddings[1].text_id: must not contain NUL"), err.details()
    assert error_info(err)["committed_batches"] == "2"
    assert set(await world.rows()) == {"s0", "s1"}


def _text_item(text_id: str, text: str, **metadata: Any) -> pb.TextItem:
    item = pb.TextItem(text_id=text_id, text=text)
    if metadata:
        item.metadata.update(metadata)
    return item


async def test_hostile_text_requests_are_refused_with_the_right_status(world: World) -> None:
    # the server-side embedding RPCs: each hostile request ends in its status (never INTERNAL/UNKNOWN), before
    # any provider call (this world's instances have no API key: a request passing every check ends in
    # FAILED_PRECONDITION NO_API_KEY, still before the provider) and storing nothing
    alice = world.md("alice")
    big = 5000 + 1  # VDB_MAX_BATCH_ITEMS is 5000
    cases: list[tuple[str, Any, grpc.StatusCode, str]] = [
        ("embed: no instance", pb.EmbedTextsRequest(texts=["x"]), C.INVALID_ARGUMENT, "instance"),
        ("embed: a/b/c", pb.EmbedTextsRequest(instance="a/b/c", texts=["x"]), C.INVALID_ARGUMENT, "instance"),
        (
            "embed: a built-in definition",
            pb.EmbedTextsRequest(instance="_system/openai-small", texts=["x"]),
            C.INVALID_ARGUMENT,
            "instance",
        ),
        ("embed: empty text", pb.EmbedTextsRequest(instance="inst", texts=["ok", ""]), C.INVALID_ARGUMENT, "texts[1]"),
        (
            "embed: too many texts",
            pb.EmbedTextsRequest(instance="inst", texts=["x"] * big),
            C.INVALID_ARGUMENT,
            "texts",
        ),
        (
            "embed: beyond the context_limit",
            pb.EmbedTextsRequest(instance="inst", texts=["x" * 300_000]),
            C.INVALID_ARGUMENT,
            "texts[0]",
        ),
        ("embed: absent instance", pb.EmbedTextsRequest(instance="nope", texts=["x"]), C.NOT_FOUND, ""),
        ("embed: passes every check", pb.EmbedTextsRequest(instance="inst", texts=["x"]), C.FAILED_PRECONDITION, ""),
        (
            "upsert: empty text, twice the same text_id, NaN metadata",
            pb.UpsertTextsRequest(
                owner="alice",
                project_handle="proj",
                items=[_text_item("a", ""), _text_item("b", "x"), _text_item("b", "y", k=float("nan"))],
            ),
            C.INVALID_ARGUMENT,
            "items[0].text",
        ),
        (
            "upsert: metadata against the schema",
            pb.UpsertTextsRequest(owner="alice", project_handle="schema", items=[_text_item("a", "x", year="1781")]),
            C.INVALID_ARGUMENT,
            "items[0].metadata",
        ),
        (
            "upsert: a project without instance",
            pb.UpsertTextsRequest(owner="alice", project_handle="orphan", items=[_text_item("a", "x")]),
            C.FAILED_PRECONDITION,
            "",
        ),
        (
            "search: empty text",
            pb.SearchSimilarRequest(owner="alice", project_handle="pub", text=""),
            C.INVALID_ARGUMENT,
            "text",
        ),
        (
            "search: limit out of range",
            pb.SearchSimilarRequest(owner="alice", project_handle="pub", text="x", limit=-1),
            C.INVALID_ARGUMENT,
            "limit",
        ),
        (
            "search: a project without instance",
            pb.SearchSimilarRequest(owner="alice", project_handle="orphan", text="x"),
            C.FAILED_PRECONDITION,
            "",
        ),
    ]
    before = await snapshot(world.vdb.pool)
    wrong: list[str] = []
    for name, request, code, field in cases:
        method = {
            pb.EmbedTextsRequest: world.vdb.embeddings.EmbedTexts,
            pb.UpsertTextsRequest: world.vdb.embeddings.UpsertTexts,
            pb.SearchSimilarRequest: world.vdb.embeddings.SearchSimilar,
        }[type(request)]
        started = time.monotonic()
        try:
            await method(request, metadata=alice)
            wrong.append(f"{name}: OK")
            continue
        except grpc.aio.AioRpcError as err:
            fields = [f for f, _ in field_violations(err)]
            if err.code() != code or (field and field not in fields):
                wrong.append(f"{name}: {err.code().name} {fields} {err.details()[:200]}")
        assert time.monotonic() - started < FAST, name
    assert wrong == []
    assert await snapshot(world.vdb.pool) == before


async def test_hostile_text_streams_fail_at_their_batch(world: World) -> None:
    # an empty text, a project without instance, a later message naming another project, no project: the
    # stream fails at that batch, saying how many batches were committed, and nothing is stored
    from embedding_helpers import error_info

    def msg(project: str, *items: pb.TextItem) -> pb.StreamUpsertTextsRequest:
        return pb.StreamUpsertTextsRequest(owner="alice", project_handle=project, items=list(items))

    before = await snapshot(world.vdb.pool)
    for messages, code, words, committed in (
        ([msg("proj", _text_item("a", ""))], C.INVALID_ARGUMENT, "batch 0: items[0].text", "0"),
        ([msg("orphan", _text_item("a", "x"))], C.FAILED_PRECONDITION, "batch 0: ", "0"),
        ([msg("proj"), msg("pub", _text_item("a", "x"))], C.INVALID_ARGUMENT, "batch 1: ", "1"),
        ([msg("")], C.INVALID_ARGUMENT, "", None),
    ):
        err = await rpc_error(world.vdb.embeddings.StreamUpsertTexts(iter(messages), metadata=world.md("alice")), code)
        assert err.details().startswith(words), err.details()
        if committed is not None:
            assert error_info(err).get("committed_batches") == committed, (err.details(), error_info(err))
    assert await snapshot(world.vdb.pool) == before


@pytest.mark.parametrize(
    "body", [b"\x0a\x02\xff\xfe", b"\x0a\x50abc", b"\x0b"], ids=["invalid-utf8", "truncated", "open-group"]
)
async def test_undecodable_health_and_reflection_requests_are_invalid_argument(world: World, body: bytes) -> None:
    """Health and reflection skip authentication, not the decoding boundary (gRPC itself would say UNKNOWN)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = world.vdb.channel
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None)
    err = await rpc_error(check(body), C.INVALID_ARGUMENT)
    assert "cannot be decoded" in (err.details() or "")
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in watch(body):
            pass
    assert info.value.code() == C.INVALID_ARGUMENT
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in reflect(iter([body])):
            pass
    assert info.value.code() == C.INVALID_ARGUMENT
    # and well-formed requests still work
    ok = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = [
        a async for a in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    ]
    assert any("vdb_grpc.v1.EmbeddingService" in s.name for a in answers for s in a.list_services_response.service)
