"""Every RPC x every kind of caller over real gRPC, against the one table in tests/authz_table.py.

Each cell asserts the status the table states. A refused call must change nothing: a digest of every table's
rows is compared before and after it, and it must not have called the provider (alice/inst points at a fake
provider on 127.0.0.1 whose requests are counted: a successful call of a ``provider`` row calls it, every other
call does not). A successful call may change the world; it is restored afterwards from a copy taken once (so
every cell starts from the same state, with the same ids).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authz_table import BY_KEY, CALLERS, METHODS, TABLE
from embedding_helpers import server_with
from fake_provider import FakeProvider
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ANON, Harness, bearer
from llm_helpers import create_definition, create_instance, share_instance
from text_helpers import PROVIDER_KEY

from vdb_grpc.server import SERVICE_NAMES
from vdb_grpc.v1 import admin_pb2 as apb
from vdb_grpc.v1 import api_standard_pb2 as spb
from vdb_grpc.v1 import common_pb2 as cpb
from vdb_grpc.v1 import embedding_pb2 as epb
from vdb_grpc.v1 import llm_definition_pb2 as dpb
from vdb_grpc.v1 import llm_instance_pb2 as ipb
from vdb_grpc.v1 import project_pb2 as ppb
from vdb_grpc.v1 import user_pb2 as upb

ROOT = Path(__file__).resolve().parents[1]
WRONG_KEY = "f" * 64
#: alice/inst's dimensions (llm_helpers.instance) and so the fake provider's.
DIMS = 3


@pytest.fixture
def server_settings(server_settings):  # type: ignore[no-untyped-def]
    """The fake provider listens on 127.0.0.1, which the server refuses to call unless allowed; the admin's
    ResetDatabase cell needs VDB_ALLOW_RESET (its refusal without it is tested in tests/test_admin.py)."""
    return server_settings.replace(
        provider_allow=("127.0.0.1",), provider_retries=0, provider_timeout_seconds=5.0, allow_reset=True
    )


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider(dims=DIMS).start()
    yield provider
    provider.stop()


#: request builders by method; ``project`` is "proj", or "pub" for the public-project column
Builder = Callable[[str], Any]


def _mask(*paths: str) -> FieldMask:
    return FieldMask(paths=list(paths))


def _emb(text_id: str) -> epb.Embedding:
    return epb.Embedding(text_id=text_id, vector=[1.0, 2.0, 3.0])


REQUESTS: dict[str, Builder] = {
    "UserService/CreateUser": lambda p: upb.CreateUserRequest(
        user=upb.User(user_handle="newbie", name="N", email="newbie@example.org")
    ),
    "UserService/GetUser": lambda p: upb.GetUserRequest(user_handle="alice"),
    "UserService/ListUsers": lambda p: upb.ListUsersRequest(),
    "UserService/UpdateUser": lambda p: upb.UpdateUserRequest(
        user=upb.User(user_handle="alice", name="Alicia"), update_mask=_mask("name")
    ),
    "UserService/DeleteUser": lambda p: upb.DeleteUserRequest(user_handle="alice"),
    "UserService/RotateUserKey": lambda p: upb.RotateUserKeyRequest(user_handle="alice"),
    "ApiStandardService/CreateApiStandard": lambda p: spb.CreateApiStandardRequest(
        api_standard=spb.ApiStandard(api_standard_handle="newstd", key_method="auth_bearer", key_field="k")
    ),
    "ApiStandardService/GetApiStandard": lambda p: spb.GetApiStandardRequest(api_standard_handle="openai"),
    "ApiStandardService/ListApiStandards": lambda p: spb.ListApiStandardsRequest(),
    "ApiStandardService/UpdateApiStandard": lambda p: spb.UpdateApiStandardRequest(
        api_standard=spb.ApiStandard(api_standard_handle="openai", description="changed"),
        update_mask=_mask("description"),
    ),
    "ApiStandardService/DeleteApiStandard": lambda p: spb.DeleteApiStandardRequest(api_standard_handle="unused"),
    "ProjectService/CreateProject": lambda p: ppb.CreateProjectRequest(
        project=ppb.Project(owner="alice", project_handle="newp", instance="alice/inst")
    ),
    "ProjectService/GetProject": lambda p: ppb.GetProjectRequest(owner="alice", project_handle=p),
    "ProjectService/ListProjects": lambda p: ppb.ListProjectsRequest(include_public=True),
    "ProjectService/UpdateProject": lambda p: ppb.UpdateProjectRequest(
        project=ppb.Project(owner="alice", project_handle=p, description="changed"), update_mask=_mask("description")
    ),
    "ProjectService/DeleteProject": lambda p: ppb.DeleteProjectRequest(owner="alice", project_handle=p),
    "ProjectService/ShareProject": lambda p: ppb.ShareProjectRequest(
        owner="alice", project_handle=p, share=cpb.Share(user_handle="oscar", role="reader")
    ),
    "ProjectService/UnshareProject": lambda p: ppb.UnshareProjectRequest(
        owner="alice", project_handle=p, user_handle="rita"
    ),
    "ProjectService/ListProjectShares": lambda p: ppb.ListProjectSharesRequest(owner="alice", project_handle=p),
    "ProjectService/TransferProject": lambda p: ppb.TransferProjectRequest(
        owner="alice", project_handle=p, new_owner="eddie"
    ),
    "EmbeddingService/UpsertEmbeddings": lambda p: epb.UpsertEmbeddingsRequest(
        owner="alice", project_handle=p, embeddings=[_emb("t2")]
    ),
    "EmbeddingService/StreamUpsertEmbeddings": lambda p: iter(
        [epb.StreamUpsertEmbeddingsRequest(owner="alice", project_handle=p, embeddings=[_emb("t2")])]
    ),
    "EmbeddingService/GetEmbedding": lambda p: epb.GetEmbeddingRequest(owner="alice", project_handle=p, text_id="t1"),
    "EmbeddingService/ListEmbeddings": lambda p: epb.ListEmbeddingsRequest(owner="alice", project_handle=p),
    "EmbeddingService/DeleteEmbedding": lambda p: epb.DeleteEmbeddingRequest(
        owner="alice", project_handle=p, text_id="t1"
    ),
    "EmbeddingService/DeleteAllEmbeddings": lambda p: epb.DeleteAllEmbeddingsRequest(owner="alice", project_handle=p),
    "EmbeddingService/SearchSimilar": lambda p: epb.SearchSimilarRequest(
        owner="alice", project_handle=p, text_id="t1", threshold=-1
    ),
    "EmbeddingService/SearchSimilar (text)": lambda p: epb.SearchSimilarRequest(
        owner="alice", project_handle=p, text="the first text", threshold=-1
    ),
    "EmbeddingService/EmbedTexts": lambda p: epb.EmbedTextsRequest(instance="alice/inst", texts=["a text"]),
    "EmbeddingService/UpsertTexts": lambda p: epb.UpsertTextsRequest(
        owner="alice", project_handle=p, items=[epb.TextItem(text_id="t2", text="the second text")]
    ),
    "EmbeddingService/StreamUpsertTexts": lambda p: iter(
        [
            epb.StreamUpsertTextsRequest(
                owner="alice", project_handle=p, items=[epb.TextItem(text_id="t2", text="the second text")]
            )
        ]
    ),
    "LlmDefinitionService/CreateDefinition": lambda p: dpb.CreateDefinitionRequest(
        definition=dpb.LlmDefinition(
            owner="alice",
            definition_handle="newd",
            endpoint="https://llm.example.org/v1/embeddings",
            api_standard="openai",
            model="m",
            dimensions=3,
            context_limit=512,
        )
    ),
    "LlmDefinitionService/GetDefinition": lambda p: dpb.GetDefinitionRequest(owner="alice", definition_handle="defn"),
    "LlmDefinitionService/ListDefinitions": lambda p: dpb.ListDefinitionsRequest(),
    "LlmDefinitionService/UpdateDefinition": lambda p: dpb.UpdateDefinitionRequest(
        definition=dpb.LlmDefinition(owner="alice", definition_handle="defn", description="changed"),
        update_mask=_mask("description"),
    ),
    "LlmDefinitionService/DeleteDefinition": lambda p: dpb.DeleteDefinitionRequest(
        owner="alice", definition_handle="defn"
    ),
    "LlmDefinitionService/ShareDefinition": lambda p: dpb.ShareDefinitionRequest(
        owner="alice", definition_handle="defn", share=cpb.Share(user_handle="oscar", role="reader")
    ),
    "LlmDefinitionService/UnshareDefinition": lambda p: dpb.UnshareDefinitionRequest(
        owner="alice", definition_handle="defn", user_handle="rita"
    ),
    "LlmDefinitionService/ListDefinitionShares": lambda p: dpb.ListDefinitionSharesRequest(
        owner="alice", definition_handle="defn"
    ),
    "LlmInstanceService/CreateInstance": lambda p: ipb.CreateInstanceRequest(
        instance=ipb.LlmInstance(
            owner="alice",
            instance_handle="newi",
            endpoint="https://llm.example.org/v1/embeddings",
            api_standard="openai",
            model="m",
            dimensions=3,
            context_limit=512,
        )
    ),
    "LlmInstanceService/CreateInstanceFromDefinition": lambda p: ipb.CreateInstanceFromDefinitionRequest(
        definition="alice/defn", instance=ipb.LlmInstance(owner="alice", instance_handle="fromd")
    ),
    "LlmInstanceService/GetInstance": lambda p: ipb.GetInstanceRequest(owner="alice", instance_handle="inst"),
    "LlmInstanceService/ListInstances": lambda p: ipb.ListInstancesRequest(),
    "LlmInstanceService/UpdateInstance": lambda p: ipb.UpdateInstanceRequest(
        instance=ipb.LlmInstance(owner="alice", instance_handle="inst", description="changed"),
        update_mask=_mask("description"),
    ),
    "LlmInstanceService/DeleteInstance": lambda p: ipb.DeleteInstanceRequest(
        owner="alice", instance_handle="inst", force=True
    ),
    "LlmInstanceService/ShareInstance": lambda p: ipb.ShareInstanceRequest(
        owner="alice", instance_handle="inst", share=cpb.Share(user_handle="oscar", role="reader")
    ),
    "LlmInstanceService/UnshareInstance": lambda p: ipb.UnshareInstanceRequest(
        owner="alice", instance_handle="inst", user_handle="rita"
    ),
    "LlmInstanceService/ListInstanceShares": lambda p: ipb.ListInstanceSharesRequest(
        owner="alice", instance_handle="inst"
    ),
    "AdminService/SanityCheck": lambda p: apb.SanityCheckRequest(),
    "AdminService/ResetDatabase": lambda p: apb.ResetDatabaseRequest(confirm="RESET"),
    "AdminService/ReencryptApiKeys": lambda p: apb.ReencryptApiKeysRequest(),
}


def _proto_methods() -> Iterator[str]:
    """``Service/Method`` of every RPC the protos declare."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for full_name in SERVICE_NAMES:
        service = pool.FindServiceByName(full_name)
        for method in service.methods:
            yield f"{service.name}/{method.name}"


def test_every_rpc_has_a_row_and_a_request() -> None:
    declared = set(_proto_methods())
    assert declared == METHODS, (
        f"RPCs without a row in tests/authz_table.py: {sorted(declared - METHODS)}; "
        f"rows for RPCs that do not exist: {sorted(METHODS - declared)}"
    )
    assert set(REQUESTS) == set(BY_KEY)
    assert len(TABLE) == len(BY_KEY)


def test_docs_permissions_is_rendered_from_the_table() -> None:
    rendered = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_permissions.py"), "--stdout"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    committed = (ROOT / "docs" / "permissions.md").read_text(encoding="utf-8")
    assert committed == rendered, "docs/permissions.md is stale: run scripts/render_permissions.py"


# --- the world, its digest and its restoration --------------------------------------------------------------


class World:
    def __init__(self, vdb: Harness, keys: dict[str, str]) -> None:
        self.vdb = vdb
        self.keys = keys
        self._digest_sql = ""
        self._restore_sql = ""

    def metadata(self, caller: str) -> tuple[tuple[str, str], ...]:
        if caller == "admin":
            return ADMIN
        if caller in ("anonymous", "public"):
            return ANON
        if caller == "wrong_key":
            return bearer(WRONG_KEY)
        return bearer(self.keys[{"owner": "alice", "editor": "eddie", "reader": "rita", "other": "oscar"}[caller]])

    async def freeze(self) -> None:
        """Copy every table (and sequence position) aside, and prepare the digest and restore statements."""
        async with self.vdb.pool.acquire() as conn:
            tables = [
                r["t"]
                for r in await conn.fetch("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            ]
            self._digest_sql = " UNION ALL ".join(
                f"SELECT '{t}' AS t, md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) AS h FROM public.\"{t}\" x"
                for t in tables
            )
            await conn.execute("CREATE SCHEMA frozen")
            for t in tables:
                await conn.execute(f'CREATE TABLE frozen."{t}" AS TABLE public."{t}"')
            sequences = await conn.fetch(
                "SELECT schemaname || '.' || sequencename AS s, last_value, 'true' AS called FROM pg_sequences"
                " WHERE schemaname = 'public' AND last_value IS NOT NULL"
            )
            quoted = ", ".join(f'public."{t}"' for t in tables)
            self._restore_sql = (
                "SET session_replication_role = replica;"
                f" TRUNCATE {quoted};"
                # OVERRIDING SYSTEM VALUE: identity columns GENERATED ALWAYS (index_segments.segment) take the copy
                + "".join(
                    f' INSERT INTO public."{t}" OVERRIDING SYSTEM VALUE SELECT * FROM frozen."{t}";' for t in tables
                )
                + "".join(f" SELECT setval('{r['s']}', {r['last_value']}, true);" for r in sequences)
                + " RESET session_replication_role;"
            )

    async def digest(self) -> dict[str, str]:
        return {r["t"]: r["h"] for r in await self.vdb.pool.fetch(self._digest_sql)}

    async def restore(self) -> None:
        async with self.vdb.pool.acquire() as conn, conn.transaction():
            await conn.execute(self._restore_sql)


async def _make_world(vdb: Harness, fake: FakeProvider) -> World:
    keys = {u: await vdb.create_user(u) for u in ("alice", "eddie", "rita", "oscar")}
    alice = keys["alice"]
    # the "openai" standard's request_shape is openai, which the fake speaks at this path
    await create_instance(vdb, alice, "inst", endpoint=fake.url("openai"), api_key=PROVIDER_KEY)
    await share_instance(vdb, "alice", "inst", "eddie", "editor")
    await share_instance(vdb, "alice", "inst", "rita", "reader")
    await create_definition(vdb, alice, "defn")
    await vdb.definitions.ShareDefinition(
        dpb.ShareDefinitionRequest(
            owner="alice", definition_handle="defn", share=cpb.Share(user_handle="rita", role="reader")
        ),
        metadata=ADMIN,
    )
    await vdb.standards.CreateApiStandard(
        spb.CreateApiStandardRequest(
            api_standard=spb.ApiStandard(api_standard_handle="unused", key_method="auth_bearer", key_field="k")
        ),
        metadata=ADMIN,
    )
    for handle, public in (("proj", False), ("pub", True)):
        await vdb.projects.CreateProject(
            ppb.CreateProjectRequest(
                project=ppb.Project(project_handle=handle, instance="alice/inst", public_read=public)
            ),
            metadata=bearer(alice),
        )
        for user, role in (("eddie", "editor"), ("rita", "reader")):
            await vdb.projects.ShareProject(
                ppb.ShareProjectRequest(
                    owner="alice", project_handle=handle, share=cpb.Share(user_handle=user, role=role)
                ),
                metadata=bearer(alice),
            )
        await vdb.embeddings.UpsertEmbeddings(
            epb.UpsertEmbeddingsRequest(owner="alice", project_handle=handle, embeddings=[_emb("t1")]),
            metadata=bearer(alice),
        )
    world = World(vdb, keys)
    await world.freeze()
    return world


def _stub(vdb: Harness, service: str) -> Any:
    return {
        "UserService": vdb.users,
        "ApiStandardService": vdb.standards,
        "ProjectService": vdb.projects,
        "EmbeddingService": vdb.embeddings,
        "LlmDefinitionService": vdb.definitions,
        "LlmInstanceService": vdb.instances,
        "AdminService": vdb.admin,
    }[service]


async def _call(world: World, key: str, caller: str) -> tuple[str, str]:
    service, name = BY_KEY[key].method.split("/")
    project = "pub" if caller == "public" else "proj"
    request = REQUESTS[key](project)
    try:
        await getattr(_stub(world.vdb, service), name)(request, metadata=world.metadata(caller))
    except grpc.aio.AioRpcError as err:
        return err.code().name, err.details() or ""
    return "OK", ""


async def test_every_cell_of_the_matrix(db_uri: str, server_settings: Any, fake: FakeProvider) -> None:
    """All RPCs x all callers: the status of the table; a refused call leaves every table as it was and calls
    no provider; a successful call of a ``provider`` row really embeds (query cache off: every one calls)."""
    async with server_with(db_uri, server_settings, indexer=False, auth_cache_seconds=0.0, query_cache_size=0) as vdb:
        world = await _make_world(vdb, fake)
        baseline = await world.digest()
        deviations: list[str] = []
        changed: list[str] = []
        provider: list[str] = []
        cells = 0
        for row in TABLE:
            for caller in CALLERS:
                cells += 1
                calls_before = len(fake.requests)
                code, details = await _call(world, row.key, caller)
                calls = len(fake.requests) - calls_before
                expected = row.expected(caller)
                if code != expected:
                    deviations.append(f"{row.key} as {caller}: {code} ({details[:120]}), expected {expected}")
                if calls != (1 if row.provider and code == "OK" else 0):
                    provider.append(f"{row.key} as {caller} ({code}) made {calls} provider requests")
                if code == "OK":
                    await world.restore()
                    assert await world.digest() == baseline, "the world could not be restored"
                else:
                    after = await world.digest()
                    if after != baseline:
                        diff = sorted(t for t in after if after[t] != baseline.get(t))
                        changed.append(f"{row.key} as {caller} ({code}) changed {diff}")
                        await world.restore()
        assert deviations == [], "\n".join(deviations)
        assert changed == [], "\n".join(changed)
        assert provider == [], "\n".join(provider)
        assert fake.requests and all(r.key_places(PROVIDER_KEY) for r in fake.requests)
        assert cells == len(TABLE) * len(CALLERS)


@pytest.mark.parametrize("caller", ["anonymous", "wrong_key", "other"])
async def test_the_digest_notices_a_change_and_restore_undoes_it(
    db_uri: str, server_settings: Any, fake: FakeProvider, caller: str
) -> None:
    """The digest notices even a change of one timestamp, so 'changed nothing' above could fail."""
    async with server_with(db_uri, server_settings, indexer=False, auth_cache_seconds=0.0) as vdb:
        await _check_digest(vdb, fake, caller)


async def _check_digest(vdb: Harness, fake: FakeProvider, caller: str) -> None:
    world = await _make_world(vdb, fake)
    before = await world.digest()
    await vdb.pool.execute(
        "UPDATE projects SET updated_at = updated_at + interval '1 second' WHERE project_handle = 'pub'"
    )
    assert await world.digest() != before
    await world.restore()
    assert await world.digest() == before
    code, _ = await _call(world, "ProjectService/DeleteProject", caller)
    assert code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    assert await world.digest() == before
