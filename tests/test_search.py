"""SearchSimilar over real gRPC: semantics of SPEC §8, filters, paging, permissions and errors."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from harness import ADMIN, ANON, bearer, field_violations, rpc_error, status_details
from search_fixtures import add_embeddings, make_project, make_user, share

from vdb_grpc.v1 import embedding_pb2, embedding_pb2_grpc

Req = embedding_pb2.SearchSimilarRequest


def value(v: object) -> struct_pb2.Value:
    """A google.protobuf.Value holding the JSON value ``v``."""
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int | float):
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = v
    else:
        raise TypeError(v)
    return out


def cond(key: str, v: object) -> embedding_pb2.MetadataCondition:
    return embedding_pb2.MetadataCondition(key=key, value=value(v))


def by_vector(vec: list[float], **kw: object) -> Req:
    return Req(owner="alice", project_handle="docs", vector=embedding_pb2.QueryVector(values=vec), **kw)


def by_id(text_id: str, **kw: object) -> Req:
    return Req(owner="alice", project_handle="docs", text_id=text_id, **kw)


def unit(deg: float) -> list[float]:
    """A 4-dim vector at ``deg`` degrees from [1, 0, 0, 0] (in the first plane)."""
    r = math.radians(deg)
    return [math.cos(r), math.sin(r), 0.0, 0.0]


@pytest.fixture
async def world(vdb):  # type: ignore[no-untyped-def]
    """alice/docs (4 dims) with 8 documents at 0°, 10°, … 70° from the x axis, plus other users/projects."""
    async with vdb.pool.acquire() as conn:
        keys = {u: await make_user(conn, u) for u in ("alice", "bob", "carol")}
        pid = await make_project(conn, "alice", "docs", 4)
        await share(conn, pid, "bob", "reader")
        vectors = [unit(10 * i) for i in range(8)]
        await add_embeddings(
            conn,
            pid,
            "alice",
            vectors,
            ids=[f"d{i}" for i in range(8)],
            texts=[f"text {i}" for i in range(8)],
            metadata=[
                {"author": "ann", "year": 1781, "ok": True, "pub": {"city": "Jena"}},
                {"author": "bob", "year": "1781", "ok": False, "pub": {"city": "Weimar"}},
                {"author": "ann", "year": 1800, "ok": True},
                None,
                {"author": "cy", "year": 1781.0, "pub": {"city": "Jena"}},
                {"author": "ann", "ok": False},
                {"other": 1},
                {"author": "bob", "year": 1781, "ok": True, "pub": {"city": "Jena"}},
            ],
        )
        # Same text_ids in another project, and a public project: never mixed into alice/docs.
        other = await make_project(conn, "carol", "docs", 4, public_read=True)
        await add_embeddings(conn, other, "carol", vectors, ids=[f"d{i}" for i in range(8)])
    vdb.keys = keys
    return vdb


def ids(resp: embedding_pb2.SearchSimilarResponse) -> list[str]:
    return [r.text_id for r in resp.results]


async def test_by_vector_orders_by_similarity_with_defaults(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    resp = await stub.SearchSimilar(by_vector(unit(0)), metadata=ADMIN)
    # default threshold 0.5 = 60°: d0..d6 (d6 at 60° is exactly at the threshold up to float16 rounding)
    got = ids(resp)
    assert got[:6] == ["d0", "d1", "d2", "d3", "d4", "d5"]
    sims = [r.similarity for r in resp.results]
    assert sims == sorted(sims, reverse=True)
    assert sims[0] == pytest.approx(1.0, abs=1e-3)
    assert sims[3] == pytest.approx(math.cos(math.radians(30)), abs=2e-3)
    assert "d7" not in got  # 70°: similarity 0.34 < 0.5
    assert not resp.results[0].HasField("text") and not resp.results[0].HasField("metadata")


async def test_by_text_id_excludes_the_query_document(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    resp = await stub.SearchSimilar(by_id("d3", threshold=-1, include_text=True, include_metadata=True), metadata=ADMIN)
    got = ids(resp)
    assert "d3" not in got and len(got) == 7
    assert set(got[:2]) == {"d2", "d4"}  # both 10° away: tie broken by text_id
    assert got[:2] == ["d2", "d4"]
    first = resp.results[0]
    assert first.text == "text 2"
    assert first.metadata["year"] == 1800


async def test_limit_offset_paging(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    full = ids(await stub.SearchSimilar(by_vector(unit(0), threshold=-1), metadata=ADMIN))
    assert full == [f"d{i}" for i in range(8)]
    pages = []
    for offset in range(0, 8, 3):
        pages += ids(await stub.SearchSimilar(by_vector(unit(0), threshold=-1, limit=3, offset=offset), metadata=ADMIN))
    assert pages == full
    assert ids(await stub.SearchSimilar(by_vector(unit(0), threshold=-1, offset=8), metadata=ADMIN)) == []


async def test_threshold_boundary_is_inclusive(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    full = await stub.SearchSimilar(by_vector(unit(0), threshold=-1), metadata=ADMIN)
    at = full.results[4]  # d4
    resp = await stub.SearchSimilar(by_vector(unit(0), threshold=at.similarity), metadata=ADMIN)
    assert ids(resp)[-1] == "d4"
    above = float(np.nextafter(np.float32(at.similarity), np.float32(2)))
    assert ids(await stub.SearchSimilar(by_vector(unit(0), threshold=above), metadata=ADMIN))[-1] == "d3"
    # nothing reaches 1.0 except the identical vector; an empty result is a list, not an error
    assert ids(await stub.SearchSimilar(by_vector(unit(45), threshold=1.0), metadata=ADMIN)) == []


@pytest.mark.parametrize(
    ("exclude", "require", "expected"),
    [
        # strings
        ([("author", "ann")], [], ["d1", "d3", "d4", "d6", "d7"]),
        ([], [("author", "ann")], ["d0", "d2", "d5"]),
        # numbers vs strings: "1781" is not 1781 (1781.0 is)
        ([], [("year", 1781)], ["d0", "d4", "d7"]),
        ([], [("year", "1781")], ["d1"]),
        ([("year", 1781)], [], ["d1", "d2", "d3", "d5", "d6"]),
        # booleans; rows without the key are kept by exclude, dropped by require
        ([("ok", False)], [], ["d0", "d2", "d3", "d4", "d6", "d7"]),
        ([], [("ok", True)], ["d0", "d2", "d7"]),
        # nested keys
        ([], [("pub.city", "Jena")], ["d0", "d4", "d7"]),
        ([("pub.city", "Jena")], [], ["d1", "d2", "d3", "d5", "d6"]),
        # several conditions: exclude any, require all
        ([("author", "bob"), ("pub.city", "Jena")], [], ["d2", "d3", "d5", "d6"]),
        ([], [("author", "bob"), ("ok", True)], ["d7"]),
        ([("author", "cy")], [("year", 1781)], ["d0", "d7"]),
        # no match → empty list
        ([], [("author", "nobody")], []),
    ],
)
async def test_metadata_filters(world, exclude, require, expected) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    req = by_vector(
        unit(0),
        threshold=-1,
        exclude=[cond(k, v) for k, v in exclude],
        require=[cond(k, v) for k, v in require],
    )
    assert ids(await stub.SearchSimilar(req, metadata=ADMIN)) == expected


@pytest.mark.auth_cache_off  # the instance's dimensions change by SQL, not through this server
async def test_mixed_dimensions_after_instance_change_never_error(world) -> None:  # type: ignore[no-untyped-def]
    async with world.pool.acquire() as conn:
        pid = await conn.fetchval("SELECT project_id FROM projects WHERE owner = 'alice' AND project_handle = 'docs'")
        await add_embeddings(conn, pid, "alice", [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]], ids=["x0", "x1", "x2"])
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    # by vector: the instance's 4 dims only
    got = ids(await stub.SearchSimilar(by_vector(unit(0), threshold=-1), metadata=ADMIN))
    assert got == [f"d{i}" for i in range(8)]
    # by a stored 3-dim document: compared with the other 3-dim rows only
    assert ids(await stub.SearchSimilar(by_id("x0", threshold=-1), metadata=ADMIN)) == ["x1", "x2"]
    # the instance now has 3 dims: a 4-dim document still searches its own dimension
    async with world.pool.acquire() as conn:
        await conn.execute(
            "UPDATE llm_service_instances SET dimensions = 3 WHERE instance_id ="
            " (SELECT llm_service_instance_id FROM projects WHERE project_id = $1)",
            pid,
        )
    assert ids(await stub.SearchSimilar(by_vector([1, 0, 0], threshold=-1), metadata=ADMIN)) == ["x0", "x1", "x2"]
    assert len(ids(await stub.SearchSimilar(by_id("d0", threshold=-1), metadata=ADMIN))) == 7


async def test_invalid_vectors(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    err = await rpc_error(stub.SearchSimilar(by_vector([1, 0, 0]), metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT)
    assert "4 dimensions" in err.details()
    assert field_violations(err)[0][0] == "vector"
    for bad in ([0, 0, 0, 0], [float("nan"), 1, 0, 0], [70000, 0, 0, 0], [float("inf"), 0, 0, 0]):
        await rpc_error(stub.SearchSimilar(by_vector(bad), metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": -1}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10_001}, "offset"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -1.01}, "threshold"),
        ({"exclude": [embedding_pb2.MetadataCondition(key="a")]}, "exclude[0].value"),
        ({"require": [cond("", 1)]}, "require[0].key"),
        ({"require": [cond("a..b", 1)]}, "require[0].key"),
    ],
)
async def test_invalid_arguments(world, kw, field) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    err = await rpc_error(
        stub.SearchSimilar(by_vector(unit(0), **kw), metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field_violations(err)[0][0] == field


async def test_limit_zero_means_ten_and_query_is_required(world) -> None:  # type: ignore[no-untyped-def]
    async with world.pool.acquire() as conn:
        pid = await conn.fetchval("SELECT project_id FROM projects WHERE owner = 'alice' AND project_handle = 'docs'")
        await add_embeddings(conn, pid, "alice", [unit(0.5 * i) for i in range(20)], prefix="m")
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    assert len((await stub.SearchSimilar(by_vector(unit(0), limit=0), metadata=ADMIN)).results) == 10
    assert len((await stub.SearchSimilar(by_vector(unit(0), limit=25), metadata=ADMIN)).results) == 25
    await rpc_error(
        stub.SearchSimilar(Req(owner="alice", project_handle="docs"), metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_unknown_text_id_is_not_found(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    err = await rpc_error(stub.SearchSimilar(by_id("nope"), metadata=ADMIN), grpc.StatusCode.NOT_FOUND)
    info = [d for d in status_details(err) if isinstance(d, error_details_pb2.ResourceInfo)]
    assert info and info[0].resource_type == "embedding" and info[0].resource_name.endswith("/nope")


async def test_permissions(world) -> None:  # type: ignore[no-untyped-def]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    k = world.keys
    # owner, reader share, admin may search
    for md in (bearer(k["alice"]), bearer(k["bob"]), ADMIN):
        assert (
            len((await stub.SearchSimilar(by_vector(unit(0)), metadata=md)).results) == 6
        )  # d0..d5 (d6 at 60° rounds just below 0.5)
    # anonymous on a private project; an unrelated user (whether or not the project exists)
    await rpc_error(stub.SearchSimilar(by_vector(unit(0)), metadata=ANON), grpc.StatusCode.UNAUTHENTICATED)
    await rpc_error(
        stub.SearchSimilar(by_vector(unit(0)), metadata=bearer(k["carol"])), grpc.StatusCode.PERMISSION_DENIED
    )
    missing = Req(owner="alice", project_handle="nothere", text_id="d0")
    await rpc_error(stub.SearchSimilar(missing, metadata=bearer(k["carol"])), grpc.StatusCode.PERMISSION_DENIED)
    await rpc_error(stub.SearchSimilar(missing, metadata=bearer(k["alice"])), grpc.StatusCode.NOT_FOUND)
    # a public_read project: anyone, also without a key; its rows only
    public = Req(owner="carol", project_handle="docs", text_id="d0", threshold=-1)
    for md in (ANON, bearer(k["bob"])):
        assert ids(await stub.SearchSimilar(public, metadata=md)) == [f"d{i}" for i in range(1, 8)]


async def test_project_without_instance(world) -> None:  # type: ignore[no-untyped-def]
    async with world.pool.acquire() as conn:
        pid = await make_project(conn, "alice", "bare", None)
        await add_embeddings(conn, pid, "alice", [unit(0), unit(5)], ids=["a", "b"])
    stub = embedding_pb2_grpc.EmbeddingServiceStub(world.channel)
    req = Req(owner="alice", project_handle="bare", vector=embedding_pb2.QueryVector(values=unit(0)))
    await rpc_error(stub.SearchSimilar(req, metadata=ADMIN), grpc.StatusCode.FAILED_PRECONDITION)
    # by a stored document the instance is not needed
    req = Req(owner="alice", project_handle="bare", text_id="a")
    assert ids(await stub.SearchSimilar(req, metadata=ADMIN)) == ["b"]


def test_zero_vector_check_matches_float16_rounding() -> None:
    from vdb_grpc.domain.search import check_query_vector
    from vdb_grpc.errors import InvalidArgument

    tiny = 2.0**-25  # rounds to 0 in float16 (ties to even)
    with pytest.raises(InvalidArgument, match="zero vector"):
        check_query_vector([tiny, -tiny, 0.0], 3)
    above = float(np.nextafter(tiny, 1.0))  # rounds to the smallest subnormal, 2**-24
    assert np.float16(above) != 0
    assert check_query_vector([above, 0.0, 0.0], 3).shape == (3,)
    with pytest.raises(InvalidArgument, match="finite"):
        check_query_vector([1.0, float("nan"), 0.0], 3)
    with pytest.raises(InvalidArgument, match="float16 range"):
        check_query_vector([1.0, -70000.0, 0.0], 3)
