"""Fixtures' helpers of the server-side embedding tests: a user, an instance pointing at the fake provider, a
project bound to it."""

from __future__ import annotations

from typing import Any

from fake_provider import FakeProvider
from harness import ADMIN, Harness, bearer

from vdb_grpc.v1 import api_standard_pb2 as spb
from vdb_grpc.v1 import embedding_pb2 as pb
from vdb_grpc.v1 import llm_instance_pb2 as ipb
from vdb_grpc.v1 import project_pb2 as ppb

PROVIDER_KEY = "sk-fake-PROVIDER-KEY-4e8a1c93b7d2f605"
DIMS = 4


async def add_standard(vdb: Harness, handle: str, shape: str, method: str, field: str, **extra: Any) -> None:
    await vdb.standards.CreateApiStandard(
        spb.CreateApiStandardRequest(
            api_standard=spb.ApiStandard(
                api_standard_handle=handle, key_method=method, key_field=field, request_shape=shape, **extra
            )
        ),
        metadata=ADMIN,
    )


async def add_instance(
    vdb: Harness,
    user_key: str,
    fake: FakeProvider,
    shape: str = "openai",
    *,
    handle: str = "inst",
    standard: str | None = None,
    api_key: str = PROVIDER_KEY,
    endpoint: str | None = None,
    dims: int = DIMS,
    model: str = "fake-model",
    context_limit: int = 512,
) -> None:
    await vdb.instances.CreateInstance(
        ipb.CreateInstanceRequest(
            instance=ipb.LlmInstance(
                instance_handle=handle,
                endpoint=endpoint or fake.url(shape, model=model),
                api_standard=standard or shape,
                model=model,
                dimensions=dims,
                context_limit=context_limit,
                api_key=api_key,
            )
        ),
        metadata=bearer(user_key),
    )


async def add_project(
    vdb: Harness, user_key: str, instance: str = "inst", project: str = "proj", *, public: bool = False
) -> None:
    await vdb.projects.CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(project_handle=project, instance=instance, public_read=public)),
        metadata=bearer(user_key),
    )


async def world(vdb: Harness, fake: FakeProvider, shape: str = "openai", **instance: Any) -> str:
    """alice with instance ``inst`` (``shape``, at the fake) and project ``proj`` bound to it; her key."""
    alice = await vdb.create_user("alice")
    await add_instance(vdb, alice, fake, shape, **instance)
    await add_project(vdb, alice)
    return alice


def items(*pairs: tuple[str, str], metadata: dict[str, Any] | None = None) -> list[pb.TextItem]:
    out = []
    for text_id, text in pairs:
        item = pb.TextItem(text_id=text_id, text=text)
        if metadata is not None:
            item.metadata.update(metadata)
        out.append(item)
    return out


def upsert(owner: str, *pairs: tuple[str, str], project: str = "proj") -> pb.UpsertTextsRequest:
    return pb.UpsertTextsRequest(owner=owner, project_handle=project, items=items(*pairs))
