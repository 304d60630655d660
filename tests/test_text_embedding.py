"""Server-side embedding (issue 10): EmbedTexts, UpsertTexts, StreamUpsertTexts and text search against a fake
provider on 127.0.0.1 speaking every request shape."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np
import pytest
from fake_provider import FakeProvider, fake_vector
from google.rpc import error_details_pb2, status_pb2
from harness import ADMIN, ANON, bearer, field_violations, rpc_error
from text_helpers import DIMS, PROVIDER_KEY, add_instance, add_project, add_standard, items, upsert, world

from vdb_grpc.providers import client as provider_client
from vdb_grpc.v1 import embedding_pb2 as pb
from vdb_grpc.v1 import llm_instance_pb2 as ipb

C = grpc.StatusCode
SHAPES = ("openai", "cohere", "gemini", "ollama")


@pytest.fixture
def server_settings(server_settings):  # type: ignore[no-untyped-def]
    return server_settings.replace(
        provider_allow=("127.0.0.1",), provider_retries=2, provider_timeout_seconds=3.0, provider_concurrency=2
    )


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider_client, "BACKOFF_BASE", 0.01)


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    provider = FakeProvider(dims=DIMS).start()
    yield provider
    provider.stop()


def details(err: grpc.aio.AioRpcError) -> list[object]:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            out: list[object] = []
            for a in status_pb2.Status.FromString(value).details:
                for cls in (
                    error_details_pb2.RetryInfo,
                    error_details_pb2.ErrorInfo,
                    error_details_pb2.BadRequest,
                    error_details_pb2.PreconditionFailure,
                ):
                    if a.Is(cls.DESCRIPTOR):
                        m = cls()
                        a.Unpack(m)
                        out.append(m)
            return out
    return []


async def stored(vdb, text_id: str):  # type: ignore[no-untyped-def]
    return await vdb.pool.fetchrow("SELECT text, vector, vector_dim FROM embeddings WHERE text_id = $1", text_id)


# --- every shape ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_embed_texts_speaks_each_shape_and_places_the_key(vdb, fake, shape: str) -> None:
    alice = await world(vdb, fake, shape)
    resp = await vdb.embeddings.EmbedTexts(
        pb.EmbedTextsRequest(instance="alice/inst", texts=["first text", "second text"]), metadata=bearer(alice)
    )
    got = [list(v.values) for v in resp.vectors]
    assert np.allclose(got, [fake_vector("first text", DIMS), fake_vector("second text", DIMS)])
    [req] = fake.requests
    assert req.shape == shape and req.texts == ["first text", "second text"]
    expected = {
        "openai": ["bearer:authorization"],
        "cohere": ["bearer:authorization"],
        "gemini": ["header:x-goog-api-key"],
        "ollama": ["bearer:authorization"],
    }[shape]
    assert req.key_places(PROVIDER_KEY) == expected
    if shape == "openai":
        assert req.body["model"] == "fake-model" and req.body["encoding_format"] == "float"
        assert "dimensions" not in req.body  # not a text-embedding-3 model
    if shape == "cohere":
        assert req.body["embedding_types"] == ["float"] and req.body["truncate"] == "NONE"
    if shape == "gemini":
        assert req.path == "/v1beta/models/fake-model:batchEmbedContents"
        assert req.body["requests"][0]["model"] == "models/fake-model"
        assert req.body["requests"][0]["outputDimensionality"] == DIMS
    if shape == "ollama":
        assert req.body["truncate"] is False
    # a bare handle means the caller's own instance
    await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["x"]), metadata=bearer(alice))


async def test_openai_sends_dimensions_when_a_text_embedding_3_model_is_asked_for_fewer(vdb, fake) -> None:
    alice = await world(vdb, fake, "openai", model="text-embedding-3-small")
    await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice))
    assert fake.requests[0].body["dimensions"] == DIMS


@pytest.mark.parametrize(
    ("method", "field", "place"),
    [
        ("query_param", "key", "query:key"),
        ("body_form", "api_key", "body:api_key"),
        ("custom_header", "X-Api-Key", "header:x-api-key"),
    ],
)
async def test_key_goes_exactly_where_the_standard_says(vdb, fake, method: str, field: str, place: str) -> None:
    await add_standard(vdb, "custom", "openai", method, field)
    alice = await world(vdb, fake, "openai", standard="custom")
    await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice))
    assert fake.requests[0].key_places(PROVIDER_KEY) == [place]
    assert "authorization" not in fake.requests[0].headers


async def test_ollama_needs_no_key_but_openai_does(vdb, fake) -> None:
    alice = await world(vdb, fake, "ollama", api_key="")
    await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice))
    assert "authorization" not in fake.requests[0].headers
    await add_instance(vdb, alice, fake, "openai", handle="nokey", api_key="")
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="nokey", texts=["a"]), metadata=bearer(alice)),
        C.FAILED_PRECONDITION,
    )
    assert "alice/nokey" in err.details() and "no API key" in err.details()
    assert len(fake.requests) == 1


async def test_embed_texts_permissions(vdb, fake) -> None:
    alice = await world(vdb, fake)
    bob = await vdb.create_user("bob")
    req = pb.EmbedTextsRequest(instance="alice/inst", texts=["a"])
    await rpc_error(vdb.embeddings.EmbedTexts(req, metadata=bearer(bob)), C.PERMISSION_DENIED)
    await rpc_error(vdb.embeddings.EmbedTexts(req, metadata=ANON), C.UNAUTHENTICATED)
    await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="alice/nope", texts=["a"]), metadata=bearer(alice)),
        C.NOT_FOUND,
    )
    from llm_helpers import share_instance

    await share_instance(vdb, "alice", "inst", "bob", "reader")
    await vdb.embeddings.EmbedTexts(req, metadata=bearer(bob))
    await vdb.embeddings.EmbedTexts(req, metadata=ADMIN)
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="alice/inst", texts=["a", ""]), metadata=ADMIN),
        C.INVALID_ARGUMENT,
    )
    assert "texts[1]" in err.details()
    assert len(fake.requests) == 2


# --- upload, reuse, forms ------------------------------------------------------------------------------------


async def test_upsert_texts_stores_and_reuses_unchanged_texts(vdb, fake) -> None:
    alice = await world(vdb, fake, "cohere")
    md = bearer(alice)
    resp = await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha"), ("b", "beta")), metadata=md)
    assert (resp.count, resp.inserted, resp.replaced, resp.reused) == (2, 2, 0, 0)
    row = await stored(vdb, "a")
    assert row["text"] == "alpha" and np.allclose(row["vector"].tolist(), fake_vector("alpha", DIMS), atol=1e-2)
    assert fake.requests[0].form == "search_document"

    # Same texts again: no provider call at all.
    resp = await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha"), ("b", "beta")), metadata=md)
    assert (resp.count, resp.replaced, resp.reused) == (2, 2, 2)
    assert len(fake.requests) == 1

    # One text changed: only that one is sent.
    resp = await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha"), ("b", "beta 2")), metadata=md)
    assert resp.reused == 1 and fake.texts_seen[-1:] == ["beta 2"] and len(fake.requests) == 2

    # A vector replaced by UpsertEmbeddings (same text) is not the instance's: embedded again.
    await vdb.embeddings.UpsertEmbeddings(
        pb.UpsertEmbeddingsRequest(
            owner="alice", project_handle="proj", embeddings=[pb.Embedding(text_id="a", vector=[1, 2, 3, 4])]
        ),
        metadata=md,
    )
    resp = await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha")), metadata=md)
    assert resp.reused == 0 and fake.texts_seen[-1] == "alpha"

    # The instance's model changed: every stored vector is stale.
    await vdb.instances.UpdateInstance(
        ipb.UpdateInstanceRequest(instance=ipb.LlmInstance(instance_handle="inst", model="fake-model-2")),
        metadata=md,
    )
    before = len(fake.requests)
    resp = await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha"), ("b", "beta 2")), metadata=md)
    assert resp.reused == 0 and len(fake.requests) == before + 1


async def test_text_search_uses_the_query_form_and_finds_the_text(vdb, fake) -> None:
    alice = await world(vdb, fake, "gemini")
    md = bearer(alice)
    await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha"), ("b", "beta"), ("c", "gamma")), metadata=md)
    assert fake.requests[0].form == "RETRIEVAL_DOCUMENT"
    resp = await vdb.embeddings.SearchSimilar(
        pb.SearchSimilarRequest(owner="alice", project_handle="proj", text="beta", threshold=-1, include_text=True),
        metadata=md,
    )
    assert resp.results[0].text_id == "b" and resp.results[0].similarity > 0.99 and resp.results[0].text == "beta"
    assert fake.requests[-1].form == "RETRIEVAL_QUERY" and fake.requests[-1].texts == ["beta"]
    # The same query again comes from the per-instance query cache.
    await vdb.embeddings.SearchSimilar(
        pb.SearchSimilarRequest(owner="alice", project_handle="proj", text="beta"), metadata=md
    )
    assert len(fake.requests) == 2
    # A bad request is refused before the provider is paid.
    await rpc_error(
        vdb.embeddings.SearchSimilar(
            pb.SearchSimilarRequest(owner="alice", project_handle="proj", text="new text", limit=5000), metadata=md
        ),
        C.INVALID_ARGUMENT,
    )
    assert len(fake.requests) == 2


async def test_text_search_needs_a_key_even_on_a_public_project(vdb, fake) -> None:
    alice = await vdb.create_user("alice")
    await add_instance(vdb, alice, fake, "cohere")
    await add_project(vdb, alice, public=True)
    await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha")), metadata=bearer(alice))
    req = pb.SearchSimilarRequest(owner="alice", project_handle="proj", text="alpha")
    await rpc_error(vdb.embeddings.SearchSimilar(req, metadata=ANON), C.UNAUTHENTICATED)
    # vector search stays open to anyone
    await vdb.embeddings.SearchSimilar(
        pb.SearchSimilarRequest(owner="alice", project_handle="proj", vector=pb.QueryVector(values=[1, 0, 0, 0])),
        metadata=ANON,
    )
    assert len(fake.requests) == 1
    await rpc_error(
        vdb.embeddings.SearchSimilar(
            pb.SearchSimilarRequest(owner="alice", project_handle="proj", text=""), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )


async def test_upsert_texts_checks_every_item_before_any_provider_call(vdb, fake) -> None:
    alice = await world(vdb, fake)
    req = pb.UpsertTextsRequest(
        owner="alice", project_handle="proj", items=[*items(("a", "alpha"), ("", "x"), ("c", "")), *items(("a", "dup"))]
    )
    err = await rpc_error(vdb.embeddings.UpsertTexts(req, metadata=bearer(alice)), C.INVALID_ARGUMENT)
    assert fake.requests == []
    assert "items[" in err.details() and "embeddings[" not in err.details()
    fields = [v[0] for v in field_violations(err)]
    assert fields == ["items[1].text_id", "items[2].text", "items[3].text_id"], fields
    bad = await vdb.create_user("bob")
    await rpc_error(vdb.embeddings.UpsertTexts(upsert("alice", ("a", "x")), metadata=bearer(bad)), C.PERMISSION_DENIED)
    assert fake.requests == []


async def test_too_long_texts_are_refused_by_estimate_or_by_the_provider_naming_the_text_id(vdb, fake) -> None:
    alice = await world(vdb, fake, "openai", context_limit=10)
    md = bearer(alice)
    err = await rpc_error(
        vdb.embeddings.UpsertTexts(upsert("alice", ("ok", "fine"), ("huge", "word " * 100)), metadata=md),
        C.INVALID_ARGUMENT,
    )
    assert "'huge'" in err.details() and "context_limit" in err.details() and fake.requests == []

    pairs = [(f"t{i}", f"text {i}") for i in range(7)] + [("long-one", "has TOO_LONG inside")]
    err = await rpc_error(vdb.embeddings.UpsertTexts(upsert("alice", *pairs), metadata=md), C.INVALID_ARGUMENT)
    assert "items[7]" in err.details() and "'long-one'" in err.details() and "too long" in err.details()
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings") == 0


# --- provider failures ---------------------------------------------------------------------------------------


async def test_5xx_is_retried_then_succeeds_and_the_retry_limit_ends_in_unavailable(vdb, fake) -> None:
    alice = await world(vdb, fake)
    req = pb.EmbedTextsRequest(instance="inst", texts=["a"])
    fake.fail("500", times=2)
    await vdb.embeddings.EmbedTexts(req, metadata=bearer(alice))
    assert len(fake.requests) == 3
    fake.reset()
    fake.fail("500", times=3)  # retries = 2: three tries in all
    err = await rpc_error(vdb.embeddings.EmbedTexts(req, metadata=bearer(alice)), C.UNAVAILABLE)
    assert len(fake.requests) == 3 and "HTTP 500" in err.details() and len(err.details()) < 600


async def test_rate_limit_honours_retry_after_and_ends_in_resource_exhausted_with_retry_info(vdb, fake) -> None:
    alice = await world(vdb, fake)
    req = pb.EmbedTextsRequest(instance="inst", texts=["a"])
    fake.fail("429", retry_after="1")
    started = time.monotonic()
    await vdb.embeddings.EmbedTexts(req, metadata=bearer(alice))
    assert time.monotonic() - started >= 0.9 and len(fake.requests) == 2
    fake.reset()
    fake.fail("429", times=5, retry_after="30")  # past the deadline: not waited for
    started = time.monotonic()
    err = await rpc_error(vdb.embeddings.EmbedTexts(req, metadata=bearer(alice), timeout=5), C.RESOURCE_EXHAUSTED)
    assert time.monotonic() - started < 4 and len(fake.requests) == 1
    [retry] = [d for d in details(err) if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.seconds == 30


async def test_provider_401_is_failed_precondition_naming_the_instance(vdb, fake) -> None:
    alice = await world(vdb, fake, "cohere")
    fake.fail("401")
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice)),
        C.FAILED_PRECONDITION,
    )
    assert "alice/inst" in err.details() and "the provider refused the instance's API key" in err.details()
    assert len(fake.requests) == 1  # not retried


@pytest.mark.parametrize("kind", ["wrong_dims", "too_few"])
async def test_wrong_vectors_are_failed_precondition_and_nothing_is_stored(vdb, fake, kind: str) -> None:
    alice = await world(vdb, fake)
    fake.fail(kind)
    err = await rpc_error(
        vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha"), ("b", "beta")), metadata=bearer(alice)),
        C.FAILED_PRECONDITION,
    )
    assert "nothing was stored" in err.details()
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings") == 0


async def test_redirects_are_not_followed(vdb, fake) -> None:
    alice = await world(vdb, fake)
    fake.fail("redirect")
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice)),
        C.FAILED_PRECONDITION,
    )
    assert "redirect" in err.details() and len(fake.requests) == 1


async def test_the_callers_deadline_bounds_the_provider_call(vdb, fake) -> None:
    alice = await world(vdb, fake)
    fake.fail("slow", seconds=8)
    started = time.monotonic()
    await rpc_error(
        vdb.embeddings.EmbedTexts(
            pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice), timeout=1
        ),
        C.DEADLINE_EXCEEDED,
    )
    assert time.monotonic() - started < 3


async def test_a_provider_slower_than_the_timeout_is_unavailable(vdb, fake) -> None:
    alice = await world(vdb, fake)
    fake.fail("slow", times=3, seconds=3.5)  # provider_timeout_seconds = 3
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(
            pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice), timeout=30
        ),
        C.UNAVAILABLE,
    )
    assert "no answer within" in err.details()


async def test_a_closed_port_is_unavailable(vdb, fake) -> None:
    alice = await world(vdb, fake, endpoint="http://127.0.0.1:9/v1/embeddings")
    await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice)),
        C.UNAVAILABLE,
    )


@pytest.mark.parametrize("host", ["127.0.0.2", "[::1]"])
async def test_egress_to_a_non_public_address_outside_the_allow_list_is_refused(vdb, fake, host: str) -> None:
    alice = await world(vdb, fake, endpoint=fake.url("openai", host=host))
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice)),
        C.FAILED_PRECONDITION,
    )
    assert "alice/inst" in err.details() and "VDB_PROVIDER_ALLOW" in err.details()
    assert fake.requests == []


# --- concurrency, splitting ----------------------------------------------------------------------------------


async def test_inputs_are_split_per_max_inputs_and_the_instance_concurrency_is_bounded(vdb, fake) -> None:
    await add_standard(vdb, "tiny", "cohere", "auth_bearer", "Authorization", max_inputs=3)
    alice = await world(vdb, fake, "cohere", standard="tiny")
    fake.delay = 0.05
    texts = [f"text {i}" for i in range(20)]
    resp = await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=texts), metadata=bearer(alice))
    assert np.allclose([list(v.values) for v in resp.vectors], [fake_vector(t, DIMS) for t in texts])
    assert [len(r.texts) for r in fake.requests] == [3] * 6 + [2] or sorted(len(r.texts) for r in fake.requests) == [
        2
    ] + [3] * 6
    assert fake.max_in_flight == 2  # VDB_PROVIDER_CONCURRENCY


# --- streaming -----------------------------------------------------------------------------------------------


async def _stream(vdb, md, batches):  # type: ignore[no-untyped-def]
    async def gen():  # type: ignore[no-untyped-def]
        for i, pairs in enumerate(batches):
            yield pb.StreamUpsertTextsRequest(
                owner="alice" if i == 0 else "", project_handle="proj" if i == 0 else "", items=items(*pairs)
            )

    return await vdb.embeddings.StreamUpsertTexts(gen(), metadata=md)


async def test_stream_commits_every_batch_and_reuses_unchanged_texts(vdb, fake) -> None:
    alice = await world(vdb, fake, "cohere")
    batches = [[(f"b{b}-{i}", f"text {b} {i}") for i in range(5)] for b in range(6)]
    resp = await _stream(vdb, bearer(alice), batches)
    assert (resp.batches, resp.count, resp.inserted, resp.reused) == (6, 30, 30, 0)
    assert await vdb.pool.fetchval("SELECT count(*) FROM embeddings") == 30
    calls = len(fake.requests)
    resp = await _stream(vdb, bearer(alice), batches)
    assert (resp.batches, resp.replaced, resp.reused) == (6, 30, 30) and len(fake.requests) == calls


async def test_stream_keeps_the_prefix_before_a_batch_whose_provider_call_failed(vdb, fake) -> None:
    alice = await world(vdb, fake)
    batches = [
        [("a1", "one"), ("a2", "two")],
        [("b1", "three"), ("b2", "FAIL_401 here")],
        [("c1", "five")],
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stream(vdb, bearer(alice), batches)
    err = info.value
    assert err.code() == C.FAILED_PRECONDITION and err.details().startswith("batch 1: ")
    [meta] = [d for d in details(err) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert meta.reason == "STREAM_BATCH_FAILED" and meta.metadata["committed_batches"] == "1"
    ids = {r[0] for r in await vdb.pool.fetch("SELECT text_id FROM embeddings")}
    assert ids == {"a1", "a2"}


async def test_stream_rate_limit_carries_retry_info(vdb, fake) -> None:
    alice = await world(vdb, fake)
    fake.fail("429", times=10, retry_after="60")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stream(vdb, bearer(alice), [[("a", "one")]])
    assert info.value.code() == C.RESOURCE_EXHAUSTED and info.value.details().startswith("batch 0: ")
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details(info.value))


# --- the key stays secret ------------------------------------------------------------------------------------


async def test_the_key_appears_in_no_response_log_record_or_error(vdb, fake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # the service's log setup quiets httpx; here it must speak
    await add_standard(vdb, "query-key", "openai", "query_param", "key")
    alice = await world(vdb, fake, "openai", standard="query-key")
    md = bearer(alice)
    seen: list[str] = []
    resp = await vdb.embeddings.UpsertTexts(upsert("alice", ("a", "alpha")), metadata=md)
    seen.append(str(resp))
    for kind in ("401", "500", "429"):
        fake.fail(kind, times=5, retry_after="0")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["b"]), metadata=md)
        fake.reset()
        seen += [info.value.details() or "", str(info.value.trailing_metadata())]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["FAIL_401"]), metadata=md)
    seen.append(info.value.details() or "")
    seen.append(str(await vdb.instances.GetInstance(ipb.GetInstanceRequest(instance_handle="inst"), metadata=md)))
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "HTTP Request" in logs  # httpx logged the requests, with the query string redacted
    for text in [*seen, logs]:
        assert PROVIDER_KEY not in text
        assert PROVIDER_KEY[8:24] not in text


async def test_embed_texts_concurrently_for_two_instances(vdb, fake) -> None:
    alice = await world(vdb, fake)
    await add_instance(vdb, alice, fake, "ollama", handle="second", api_key="")
    a, b = await asyncio.gather(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["x"]), metadata=bearer(alice)),
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="second", texts=["x"]), metadata=bearer(alice)),
    )
    assert list(a.vectors[0].values) == list(b.vectors[0].values)


async def test_stream_overlaps_provider_calls_and_refuses_another_project_without_embedding_it(vdb, fake) -> None:
    alice = await world(vdb, fake)
    fake.delay = 0.1
    resp = await _stream(vdb, bearer(alice), [[(f"t{i}", f"text {i}")] for i in range(6)])
    assert resp.batches == 6
    assert fake.max_in_flight == 2  # the next batches were being embedded while earlier ones were written

    async def gen():  # type: ignore[no-untyped-def]
        yield pb.StreamUpsertTextsRequest(owner="alice", project_handle="proj", items=items(("x", "one")))
        yield pb.StreamUpsertTextsRequest(owner="alice", project_handle="other", items=items(("y", "never sent")))

    fake.reset()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vdb.embeddings.StreamUpsertTexts(gen(), metadata=bearer(alice))
    assert info.value.code() == C.INVALID_ARGUMENT and info.value.details().startswith("batch 1: ")
    assert "never sent" not in fake.texts_seen


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.retries: list[tuple[str, str, str]] = []

    def provider_call(self, *, shape: str, instance: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((shape, instance, outcome))

    def provider_retry(self, *, shape: str, instance: str, reason: str) -> None:
        self.retries.append((shape, instance, reason))


async def test_the_observer_hears_every_call_and_retry_without_key_or_text(db_uri, server_settings, fake) -> None:
    import grpc as grpc_mod
    from harness import Harness

    from vdb_grpc.db import create_pool
    from vdb_grpc.server import build_server

    observer = RecordingObserver()
    pool = await create_pool(db_uri, server_settings)
    server = build_server(server_settings, pool, provider_observer=observer)
    await server.start()
    channel = grpc_mod.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        vdb = Harness(channel=channel, pool=pool, port=server.port)
        alice = await world(vdb, fake, "cohere")
        fake.fail("429", retry_after="0")
        await vdb.embeddings.EmbedTexts(
            pb.EmbedTextsRequest(instance="inst", texts=["secret text"]), metadata=bearer(alice)
        )
        fake.fail("401")
        with pytest.raises(grpc_mod.aio.AioRpcError):
            await vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=["a"]), metadata=bearer(alice))
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()
    assert observer.calls == [
        ("cohere", "alice/inst", "rate_limited"),
        ("cohere", "alice/inst", "ok"),
        ("cohere", "alice/inst", "auth_refused"),
    ]
    assert observer.retries == [("cohere", "alice/inst", "rate_limited")]


async def test_a_failing_request_among_several_fails_the_call_cleanly(vdb, fake) -> None:
    await add_standard(vdb, "three", "openai", "auth_bearer", "Authorization", max_inputs=3)
    alice = await world(vdb, fake, "openai", standard="three")
    texts = [f"text {i}" for i in range(15)]
    texts[0] = "SLOW"  # the first request is still out when the second fails
    texts[4] = "FAIL_401"
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(pb.EmbedTextsRequest(instance="inst", texts=texts), metadata=bearer(alice)),
        C.FAILED_PRECONDITION,
    )
    assert "refused the instance's API key" in err.details()


@pytest.mark.parametrize("shape", SHAPES)
async def test_each_shapes_too_long_error_names_the_text(vdb, fake, shape: str) -> None:
    alice = await world(vdb, fake, shape)
    err = await rpc_error(
        vdb.embeddings.EmbedTexts(
            pb.EmbedTextsRequest(instance="inst", texts=["fine", "fine too", "TOO_LONG here"]), metadata=bearer(alice)
        ),
        C.INVALID_ARGUMENT,
    )
    assert err.details().startswith("texts[2]") and "too long" in err.details()
