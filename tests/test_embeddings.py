"""EmbeddingService over real gRPC: uploads (every check, atomicity, replace semantics, limits), reading,
listing, deleting, opaque text_ids, float16 rounding and the permission matrix."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import numpy as np
import pytest
from embedding_helpers import (
    DIMS,
    World,
    add_instance,
    add_project,
    emb,
    make_world,
    server_with,
)
from google.protobuf import json_format
from harness import Harness, field_violations, rpc_error, status_details

from vdb_grpc.auth import ADMIN as ADMIN_PRINCIPAL
from vdb_grpc.domain.embeddings import DETAILS_BUDGET, Embeddings, UploadBatch
from vdb_grpc.v1 import embedding_pb2 as pb

C = grpc.StatusCode


@pytest.fixture
async def world(vdb: Harness) -> World:
    return await make_world(vdb)


def upsert(world: World, items: list[pb.Embedding], project: str = "proj", who: str = "alice") -> Any:
    return world.vdb.embeddings.UpsertEmbeddings(
        pb.UpsertEmbeddingsRequest(owner="alice", project_handle=project, embeddings=items), metadata=world.md(who)
    )


def get(world: World, text_id: str, project: str = "proj", who: str = "alice") -> Any:
    return world.vdb.embeddings.GetEmbedding(
        pb.GetEmbeddingRequest(owner="alice", project_handle=project, text_id=text_id), metadata=world.md(who)
    )


# --- uploads: success, replace semantics, float16 -------------------------------------------------------------


async def test_upsert_stores_items_and_get_returns_them(world: World) -> None:
    items = [
        emb("doc-1", text="first text", metadata={"year": 1781, "tags": ["a", "b"], "nested": {"x": None, "t": True}}),
        emb("doc-2", (1, 0, 0, 0), vector_dim=DIMS, instance="alice/inst"),
        emb("doc-3", (0, 1, 0, 0), instance="inst"),
    ]
    resp = await upsert(world, items)
    assert list(resp.text_ids) == ["doc-1", "doc-2", "doc-3"]
    assert (resp.count, resp.inserted, resp.replaced) == (3, 3, 0)

    got = (await get(world, "doc-1")).embedding
    assert got.text_id == "doc-1" and got.vector_dim == DIMS and got.instance == "alice/inst"
    assert list(got.vector) == [0.5, -0.25, 1.0, 2.0]
    assert got.HasField("text") and got.text == "first text"
    assert json_format.MessageToDict(got.metadata) == {
        "year": 1781,
        "tags": ["a", "b"],
        "nested": {"x": None, "t": True},
    }
    # integral numbers are stored as JSON integers, not 1781.0
    stored = await world.vdb.pool.fetchval("SELECT metadata::text FROM embeddings WHERE text_id = 'doc-1'")
    assert '"year": 1781' in stored and "1781.0" not in stored

    bare = (await get(world, "doc-2")).embedding
    assert not bare.HasField("text") and not bare.HasField("metadata")


async def test_vectors_come_back_float16_rounded(world: World) -> None:
    values = [0.1, 1 / 3, 1000.123, -65504.0]
    await upsert(world, [emb("r", values)])
    got = list((await get(world, "r")).embedding.vector)
    assert got == [float(np.float16(v)) for v in values]
    assert got[0] != pytest.approx(0.1, abs=1e-6) and got[0] == pytest.approx(0.1, rel=2**-11)


async def test_reupload_replaces_vector_and_keeps_text_and_metadata_left_out(world: World) -> None:
    await upsert(world, [emb("a", text="keep me", metadata={"year": 1})])

    resp = await upsert(world, [emb("a", (1, 1, 1, 1)), emb("b")])
    assert (resp.count, resp.inserted, resp.replaced) == (2, 1, 1)
    rows = await world.rows()
    assert rows["a"] == ([1.0, 1.0, 1.0, 1.0], "keep me", {"year": 1})

    # given, they replace — even empty
    await upsert(world, [emb("a", text="", metadata={})])
    assert (await world.rows())["a"][1:3] == ("", {})
    await upsert(world, [emb("a", text="new", metadata={"year": 2})])
    assert (await world.rows())["a"][1:3] == ("new", {"year": 2})


async def test_uploads_write_unindexed_rows_and_replacing_unindexes(
    world: World, db_uri: str, server_settings: Any
) -> None:
    """Uploads never maintain an HNSW index: rows wait for the background indexer (stopped here)."""
    async with server_with(db_uri, server_settings, indexer=False) as quiet:
        w = World(quiet, world.keys, world.project_ids)
        await upsert(w, [emb("a"), emb("b")])
        assert await w.indexed() == {"a": False, "b": False}
        await w.vdb.pool.execute("UPDATE embeddings SET indexed = true")  # as if the indexer had been there
        await upsert(w, [emb("a", (1, 1, 1, 1))])
        assert await w.indexed() == {"a": False, "b": True}


async def test_empty_batch_is_a_no_op(world: World) -> None:
    resp = await upsert(world, [])
    assert resp.count == 0 and not resp.text_ids


# --- uploads: every refusal, with nothing stored ---------------------------------------------------------------


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        (emb("nul\x00id"), "embeddings[1].text_id"),
        (emb("bad", text="nul\x00text"), "embeddings[1].text"),
        (emb("bad", metadata={"k": "nul\x00"}), "embeddings[1].metadata.k"),
    ],
    ids=["nul-text_id", "nul-text", "nul-metadata"],
)
async def test_nul_anywhere_is_refused_at_the_request_boundary(world: World, bad: pb.Embedding, path: str) -> None:
    # NUL is refused by the one check every request passes (vdb_grpc.limits.check_request), naming the field path
    await upsert(world, [emb("old", text="before")])
    err = await rpc_error(upsert(world, [emb("ok-0"), bad, emb("old", (9, 9, 9, 9), text="after")]), C.INVALID_ARGUMENT)
    assert field_violations(err) == [(path, "must not contain NUL characters (PostgreSQL text cannot hold them)")]
    stored = await world.vdb.pool.fetch("SELECT text_id, text FROM embeddings ORDER BY text_id")
    assert [(r["text_id"], r["text"]) for r in stored] == [("old", "before")]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (emb("bad", (1, 2, 3)), "vector", "has 3 values but the project's instance alice/inst has 4 dimensions"),
        (emb("bad", ()), "vector", "vector is required"),
        (emb("bad", vector_dim=3), "vector_dim", "vector_dim is 3 but the vector has 4 values"),
        (emb("bad", (1, NAN, 0, 0)), "vector", "position 1 is nan: only finite values"),
        (emb("bad", (1, 0, INF, 0)), "vector", "position 2 is inf: only finite values"),
        (emb("bad", (1, 0, 0, -INF)), "vector", "position 3 is -inf"),
        (emb("bad", (1, 70000.0, 0, 0)), "vector", "position 1 is 70000, outside the float16 range"),
        (emb("bad", (0, 0, 0, 0)), "vector", "zero vector"),
        (emb("bad", (1e-9, 0, -1e-9, 0)), "vector", "zero vector (after rounding to float16)"),
        (emb("", ()), "text_id", "text_id is required"),
        (emb("x" * 1001), "text_id", "has 1001 characters; at most 1000"),
        (emb("bad", instance="alice/other"), "instance", "names 'alice/other', but the project's instance is 'alice/inst'"),
        (emb("bad", instance="other"), "instance", "names 'other'"),
        (emb("bad", instance="bob/inst"), "instance", "names 'bob/inst'"),
        (emb("bad", metadata={"v": NAN}), "metadata", "NaN or infinity"),
    ],
    ids=[
        "wrong-dims", "empty-vector", "vector_dim-mismatch", "nan", "inf", "-inf", "70000", "zero", "underflow-zero",
        "empty-text_id", "1001-char-text_id", "wrong-instance", "wrong-bare-instance",
        "other-owners-instance", "nan-metadata",
    ],
)  # fmt: skip
async def test_one_bad_item_refuses_the_whole_batch(world: World, bad: pb.Embedding, field: str, words: str) -> None:
    await upsert(world, [emb("old", text="before")])
    batch = [emb("ok-0"), bad, emb("old", (9, 9, 9, 9), text="after")]
    err = await rpc_error(upsert(world, batch), C.INVALID_ARGUMENT)
    shown = repr(bad.text_id if len(bad.text_id) <= 60 else bad.text_id[:59] + "…")
    assert field_violations(err) == [(f"embeddings[1].{field}", f"text_id {shown}: {field} " + words)] or (
        field_violations(err)[0][0] == f"embeddings[1].{field}"
        and field_violations(err)[0][1].startswith(f"text_id {shown}: ")
        and words in field_violations(err)[0][1]
    )
    assert err.details().startswith(f"embeddings[1] (text_id {shown}): {field} ")
    assert words in err.details() and err.details().endswith("nothing was stored")
    # atomic: neither the good new item nor the replacement was stored
    assert await world.rows() == {"old": ([0.5, -0.25, 1.0, 2.0], "before", None)}


async def test_duplicate_text_id_in_a_batch(world: World) -> None:
    err = await rpc_error(upsert(world, [emb("a"), emb("b"), emb("a")]), C.INVALID_ARGUMENT)
    assert field_violations(err) == [
        ("embeddings[2].text_id", "text_id 'a': text_id occurs more than once in the batch (first at embeddings[0])")
    ]
    assert await world.count() == 0


async def test_every_failing_item_is_reported_and_the_message_names_the_first(world: World) -> None:
    batch = [emb("fine-0"), emb("short", (1, 2)), emb("fine-1"), emb("zero", (0, 0, 0, 0)), emb("", vector_dim=7)]
    err = await rpc_error(upsert(world, batch), C.INVALID_ARGUMENT)
    assert [f for f, _ in field_violations(err)] == [
        "embeddings[1].vector", "embeddings[3].vector", "embeddings[4].text_id", "embeddings[4].vector_dim",
    ]  # fmt: skip
    assert err.details().startswith("embeddings[1] (text_id 'short'): vector has 2 values")
    assert "4 problems in 3 item(s)" in err.details()
    assert await world.count() == 0


async def test_thousands_of_failures_are_summarised_within_the_trailer_limit(world: World) -> None:
    batch = [emb(f"zero-{i:04d}-" + "x" * 40, (0, 0, 0, 0)) for i in range(3000)]
    err = await rpc_error(upsert(world, batch), C.INVALID_ARGUMENT)
    violations = field_violations(err)
    assert 20 < len(violations) < 100
    assert sum(len(f) + len(d) for f, d in violations) < DETAILS_BUDGET + 200
    assert violations[-1][0] == "embeddings" and "more problem(s)" in violations[-1][1]
    assert violations[0][0] == "embeddings[0].vector" and "3000 problems in 3000 item(s)" in err.details()
    assert await world.count() == 0


async def test_metadata_is_checked_against_the_project_schema(world: World) -> None:
    good = emb("good", metadata={"year": 1781, "author": {"name": "Kant"}})
    resp = await upsert(world, [good], project="schema")
    assert resp.count == 1

    cases = [
        (emb("str-year", metadata={"year": "1781"}), 'at $.year: "1781" is not of type "integer"'),
        (emb("float-year", metadata={"year": 1781.5}), 'at $.year: 1781.5 is not of type "integer"'),
        (emb("no-year", metadata={"author": {"name": "Kant"}}), '"year" is a required property'),
        (emb("nested", metadata={"year": 1, "author": {"name": 5}}), 'at $.author.name: 5 is not of type "string"'),
        (emb("missing"), "metadata is required: the project has a metadata_schema"),
    ]
    err = await rpc_error(upsert(world, [c for c, _ in cases], project="schema"), C.INVALID_ARGUMENT)
    violations = field_violations(err)
    assert [f for f, _ in violations] == [f"embeddings[{i}].metadata" for i in range(len(cases))]
    for (item, words), (_, description) in zip(cases, violations, strict=True):
        assert words in description and repr(item.text_id) in description
    assert await world.count("schema") == 1


async def test_draft4_schema_accepts_integers_sent_as_protobuf_numbers(world: World) -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "properties": {"n": {"type": "integer"}}}
    await world.vdb.pool.execute(
        "UPDATE projects SET metadata_scheme = $1 WHERE project_id = $2", json.dumps(schema), world.project_ids["proj"]
    )
    assert (await upsert(world, [emb("a", metadata={"n": 3})])).count == 1
    await rpc_error(upsert(world, [emb("b", metadata={"n": 3.5})]), C.INVALID_ARGUMENT)


async def test_non_object_metadata_is_refused_by_the_domain(world: World) -> None:
    """A Struct is always an object on the wire; the domain still refuses anything else (other front ends)."""
    embeddings = Embeddings(world.vdb.pool, max_batch_items=10)
    batch = UploadBatch(
        text_ids=["list", "str", "ok"],
        vectors=np.ones((3, DIMS), dtype=np.float32),
        vector_dims=[0, 0, 0],
        instances=["", "", ""],
        texts=[None, None, None],
        metadata=[[1, 2], "text", {"fine": True}],
    )
    from vdb_grpc.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as info:
        await embeddings.upsert(ADMIN_PRINCIPAL, "alice", "proj", batch)
    assert [v.field for v in info.value.field_violations] == ["embeddings[0].metadata", "embeddings[1].metadata"]
    assert "must be a JSON object, not list" in info.value.field_violations[0].description
    assert await world.count() == 0


async def test_project_without_instance_refuses_uploads(world: World) -> None:
    err = await rpc_error(upsert(world, [emb("a")], project="orphan"), C.FAILED_PRECONDITION)
    assert "no instance" in err.details()
    assert await world.count("orphan") == 0


# --- limits ------------------------------------------------------------------------------------------------


async def test_batch_item_limit_names_the_setting(world: World, db_uri: str, server_settings: Any) -> None:
    async with server_with(db_uri, server_settings, max_batch_items=3) as small:
        w = World(small, world.keys, world.project_ids)
        assert (await upsert(w, [emb(f"t{i}") for i in range(3)])).count == 3
        err = await rpc_error(upsert(w, [emb(f"u{i}") for i in range(4)]), C.INVALID_ARGUMENT)
        assert "VDB_MAX_BATCH_ITEMS" in err.details() and "limit of 3" in err.details()
        assert field_violations(err)[0][0] == "embeddings"
    assert await world.count() == 3


async def test_request_over_the_message_limit_is_resource_exhausted(
    world: World, db_uri: str, server_settings: Any
) -> None:
    limit = 1024 * 1024
    async with server_with(db_uri, server_settings, max_message_bytes=limit) as small:
        w = World(small, world.keys, world.project_ids)
        big = [emb(f"t{i}", text="x" * 2000) for i in range(600)]  # ~1.2 MB
        err = await rpc_error(upsert(w, big), C.RESOURCE_EXHAUSTED)
        assert "larger than max (" in err.details() and f"vs. {limit})" in err.details()
    assert await world.count() == 0


async def test_2000_vectors_of_3072_dims_fit_in_one_request_at_the_default_limit(world: World) -> None:
    big_instance = await add_instance(world.vdb, "alice", "large", 3072)
    world.project_ids["large"] = await add_project(world.vdb, "alice", "large", big_instance)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((2000, 3072)).astype(np.float32)
    request = pb.UpsertEmbeddingsRequest(owner="alice", project_handle="large")
    for i, v in enumerate(vectors):
        request.embeddings.add(text_id=f"https://example.org/doc/{i}", vector=v.tolist(), metadata={"i": i})
    assert 24_000_000 < request.ByteSize() < 64 * 1024 * 1024
    resp = await world.vdb.embeddings.UpsertEmbeddings(request, metadata=world.md("alice"))
    assert resp.count == 2000
    assert await world.count("large") == 2000
    stored = await world.vdb.pool.fetchval(
        "SELECT vector FROM embeddings WHERE project_id = $1 AND text_id = 'https://example.org/doc/1999'",
        world.project_ids["large"],
    )
    assert np.array_equal(stored, vectors[1999].astype(np.float16).astype(np.float32))


# --- text_ids are opaque -------------------------------------------------------------------------------------

WEIRD_IDS = [
    "https://example.org/a b?q=1%202&x=ü#frag",
    "urn:isbn:0451450523",
    "a%2Fb",
    "a/b/../c",
    " leading and trailing ",
    "Ünïcödé/日本語/🙂",
    "tab\there\nnewline",
    "'quotes' \"and\" \\backslash",
    "z" * 1000,
]


async def test_weird_text_ids_round_trip_exactly(world: World) -> None:
    await upsert(world, [emb(t, (i + 1, 0, 0, 1)) for i, t in enumerate(WEIRD_IDS)])
    for t in WEIRD_IDS:
        assert (await get(world, t)).embedding.text_id == t
    listed = await world.vdb.embeddings.ListEmbeddings(
        pb.ListEmbeddingsRequest(owner="alice", project_handle="proj"), metadata=world.md("alice")
    )
    assert sorted(e.text_id for e in listed.embeddings) == sorted(WEIRD_IDS)
    assert set(await world.rows()) == set(WEIRD_IDS)
    # no decoding anywhere: the encoded and decoded spellings are different ids
    await rpc_error(get(world, "a/b"), C.NOT_FOUND)
    await rpc_error(get(world, "https://example.org/a%20b?q=1%202&x=ü#frag"), C.NOT_FOUND)
    for t in WEIRD_IDS:
        await world.vdb.embeddings.DeleteEmbedding(
            pb.DeleteEmbeddingRequest(owner="alice", project_handle="proj", text_id=t), metadata=world.md("alice")
        )
    assert await world.count() == 0


# --- get / list / delete -------------------------------------------------------------------------------------


async def test_get_absent_and_malformed(world: World) -> None:
    err = await rpc_error(get(world, "nope"), C.NOT_FOUND)
    assert "'nope'" in err.details() and "alice/proj" in err.details()
    assert [d.resource_name for d in status_details(err)] == ["nope"]
    await rpc_error(get(world, ""), C.INVALID_ARGUMENT)
    await rpc_error(get(world, "x" * 1001), C.INVALID_ARGUMENT)


async def test_list_pages_in_text_id_order_without_vectors_by_default(world: World) -> None:
    ids = [f"id-{i:02d}" for i in range(7)]
    await upsert(world, [emb(t, (i + 1, 0, 0, 0), text=f"text {t}") for i, t in enumerate(reversed(ids))])

    def listing(token: str = "", size: int = 3, vectors: bool = False) -> Any:
        return world.vdb.embeddings.ListEmbeddings(
            pb.ListEmbeddingsRequest(
                owner="alice", project_handle="proj", page_size=size, page_token=token, include_vectors=vectors
            ),
            metadata=world.md("alice"),
        )

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await listing(token)
        pages += 1
        for e in page.embeddings:
            assert not e.vector and e.vector_dim == DIMS and e.text == f"text {e.text_id}"
        seen += [e.text_id for e in page.embeddings]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids and pages == 3

    with_vectors = await listing(size=2, vectors=True)
    assert [list(e.vector) for e in with_vectors.embeddings] == [[7.0, 0, 0, 0], [6.0, 0, 0, 0]]
    assert (await listing(size=0)).next_page_token == ""
    await rpc_error(listing(token="garbage"), C.INVALID_ARGUMENT)
    empty = await world.vdb.embeddings.ListEmbeddings(
        pb.ListEmbeddingsRequest(owner="alice", project_handle="pub"), metadata=world.md("alice")
    )
    assert not empty.embeddings and not empty.next_page_token


async def test_list_with_large_vectors_stays_under_the_default_client_limit(world: World) -> None:
    inst = await add_instance(world.vdb, "alice", "large", 3072)
    world.project_ids["large"] = await add_project(world.vdb, "alice", "large", inst)
    rng = np.random.default_rng(1)
    request = pb.UpsertEmbeddingsRequest(owner="alice", project_handle="large")
    for i in range(400):
        request.embeddings.add(text_id=f"t{i:03d}", vector=rng.standard_normal(3072).tolist())
    await world.vdb.embeddings.UpsertEmbeddings(request, metadata=world.md("alice"))
    # the harness channel keeps gRPC's default 4 MiB receive limit
    total, token = 0, ""
    while True:
        page = await world.vdb.embeddings.ListEmbeddings(
            pb.ListEmbeddingsRequest(
                owner="alice", project_handle="large", page_size=1000, page_token=token, include_vectors=True
            ),
            metadata=world.md("alice"),
        )
        assert 0 < len(page.embeddings) < 400 and page.ByteSize() < 4 * 1024 * 1024
        total += len(page.embeddings)
        token = page.next_page_token
        if not token:
            break
    assert total == 400


async def test_delete_one_and_all(world: World) -> None:
    await upsert(world, [emb(f"t{i}") for i in range(5)])
    req = pb.DeleteEmbeddingRequest(owner="alice", project_handle="proj", text_id="t1")
    await world.vdb.embeddings.DeleteEmbedding(req, metadata=world.md("alice"))
    assert "t1" not in await world.rows()
    err = await rpc_error(world.vdb.embeddings.DeleteEmbedding(req, metadata=world.md("alice")), C.NOT_FOUND)
    assert "'t1'" in err.details()

    all_req = pb.DeleteAllEmbeddingsRequest(owner="alice", project_handle="proj")
    assert (await world.vdb.embeddings.DeleteAllEmbeddings(all_req, metadata=world.md("alice"))).deleted_count == 4
    assert (await world.vdb.embeddings.DeleteAllEmbeddings(all_req, metadata=world.md("alice"))).deleted_count == 0
    assert await world.count() == 0


# --- permissions ---------------------------------------------------------------------------------------------

WRITERS = {"admin", "alice", "eddie"}
PRIVATE_READERS = WRITERS | {"rita"}
DENIED = {"anon": C.UNAUTHENTICATED, "oscar": C.PERMISSION_DENIED, "rita": C.PERMISSION_DENIED}


@pytest.mark.parametrize("who", ["admin", "alice", "eddie", "rita", "oscar", "anon"])
@pytest.mark.parametrize("project", ["proj", "pub"])
async def test_permission_matrix(world: World, who: str, project: str) -> None:
    await upsert(world, [emb("seed"), emb("victim")], project=project)
    stub, md = world.vdb.embeddings, world.md(who)
    may_write = who in WRITERS
    may_read = who in PRIVATE_READERS or project == "pub"

    def refused(code: C) -> C:
        return C.UNAUTHENTICATED if who == "anon" else code

    calls = {
        "upsert": (upsert(world, [emb(f"by-{who}")], project=project, who=who), may_write),
        "stream": (
            stub.StreamUpsertEmbeddings(
                iter([pb.StreamUpsertEmbeddingsRequest(owner="alice", project_handle=project, embeddings=[emb("s")])]),
                metadata=md,
            ),
            may_write,
        ),
        "delete": (
            stub.DeleteEmbedding(
                pb.DeleteEmbeddingRequest(owner="alice", project_handle=project, text_id="victim"), metadata=md
            ),
            may_write,
        ),
        # permission before existence: an absent text_id is not revealed to those who may not delete
        "delete-absent": (
            stub.DeleteEmbedding(
                pb.DeleteEmbeddingRequest(owner="alice", project_handle=project, text_id="absent"), metadata=md
            ),
            None,
        ),
        "get": (get(world, "seed", project=project, who=who), may_read),
        "list": (
            stub.ListEmbeddings(pb.ListEmbeddingsRequest(owner="alice", project_handle=project), metadata=md),
            may_read,
        ),
    }
    for name, (call, allowed) in calls.items():
        if name == "delete-absent":
            await rpc_error(call, C.NOT_FOUND if may_write else refused(C.PERMISSION_DENIED))
        elif allowed:
            await call
        else:
            err = await rpc_error(call, refused(C.PERMISSION_DENIED))
            if name == "stream":
                assert err.details().startswith("batch 0:")
    before = await world.count(project)
    clear = stub.DeleteAllEmbeddings(pb.DeleteAllEmbeddingsRequest(owner="alice", project_handle=project), metadata=md)
    if may_write:
        assert (await clear).deleted_count == before
    else:
        await rpc_error(clear, refused(C.PERMISSION_DENIED))
        assert await world.count(project) == before
        assert f"by-{who}" not in await world.rows(project)


async def test_absent_project_is_denied_to_strangers_and_not_found_for_its_owner(world: World) -> None:
    def on_absent(who: str) -> Any:
        return world.vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(owner="alice", project_handle="nothing", embeddings=[emb("a")]),
            metadata=world.md(who),
        )

    await rpc_error(on_absent("oscar"), C.PERMISSION_DENIED)
    await rpc_error(on_absent("alice"), C.NOT_FOUND)
    await rpc_error(on_absent("admin"), C.NOT_FOUND)
    await rpc_error(on_absent("anon"), C.UNAUTHENTICATED)


# --- uploads feed search -------------------------------------------------------------------------------------


async def test_uploaded_embeddings_are_searchable_at_once(world: World) -> None:
    await upsert(world, [emb("q", (1, 0, 0, 0)), emb("near", (1, 0.1, 0, 0)), emb("far", (-1, 0, 0, 0))])
    resp = await world.vdb.embeddings.SearchSimilar(
        pb.SearchSimilarRequest(owner="alice", project_handle="proj", text_id="q"), metadata=world.md("rita")
    )
    assert [r.text_id for r in resp.results] == ["near"]
    assert math.isclose(resp.results[0].similarity, 0.995, abs_tol=0.001)
