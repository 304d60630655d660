"""ApiStandardService over real gRPC."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ANON, bearer, field_violations, rpc_error, status_details

from vdb_grpc.v1 import api_standard_pb2 as pb

C = grpc.StatusCode


def std(
    handle: str = "mistral", method: str = "auth_bearer", key_field: str = "Authorization", desc: str = ""
) -> pb.ApiStandard:
    return pb.ApiStandard(api_standard_handle=handle, key_method=method, key_field=key_field, description=desc)


async def test_seeded_standards_readable_without_key(vdb):
    resp = await vdb.standards.ListApiStandards(pb.ListApiStandardsRequest(), metadata=ANON)
    handles = [s.api_standard_handle for s in resp.api_standards]
    assert {"openai", "cohere", "gemini"} <= set(handles) and handles == sorted(handles)
    got = await vdb.standards.GetApiStandard(pb.GetApiStandardRequest(api_standard_handle="openai"), metadata=ANON)
    assert got.api_standard.key_method == "auth_bearer"


async def test_invalid_key_refused_even_where_no_key_needed(vdb):
    await rpc_error(
        vdb.standards.ListApiStandards(pb.ListApiStandardsRequest(), metadata=bearer("f" * 64)), C.UNAUTHENTICATED
    )


async def test_create_get_and_refusals(vdb):
    resp = await vdb.standards.CreateApiStandard(
        pb.CreateApiStandardRequest(api_standard=std(desc="Mistral")), metadata=ADMIN
    )
    assert resp.api_standard == std(desc="Mistral")
    await rpc_error(
        vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std()), metadata=ADMIN),
        C.ALREADY_EXISTS,
    )
    user = await vdb.create_user("alice")
    await rpc_error(
        vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std("other")), metadata=bearer(user)),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std("other")), metadata=ANON),
        C.UNAUTHENTICATED,
    )
    err = await rpc_error(
        vdb.standards.CreateApiStandard(
            pb.CreateApiStandardRequest(api_standard=std("other", method="carrier_pigeon")), metadata=ADMIN
        ),
        C.INVALID_ARGUMENT,
    )
    assert field_violations(err)[0][0] == "api_standard.key_method"
    await rpc_error(
        vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std("x")), metadata=ADMIN),
        C.INVALID_ARGUMENT,
    )
    await rpc_error(
        vdb.standards.CreateApiStandard(
            pb.CreateApiStandardRequest(api_standard=std("other", key_field="k" * 21)), metadata=ADMIN
        ),
        C.INVALID_ARGUMENT,
    )
    err = await rpc_error(
        vdb.standards.GetApiStandard(pb.GetApiStandardRequest(api_standard_handle="nope"), metadata=ANON), C.NOT_FOUND
    )
    assert status_details(err)[0].resource_name == "nope"


async def test_list_pages(vdb):
    for i in range(5):
        await vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std(f"std{i}")), metadata=ADMIN)
    seen, token = [], ""
    while True:
        resp = await vdb.standards.ListApiStandards(pb.ListApiStandardsRequest(page_size=2, page_token=token))
        seen += [s.api_standard_handle for s in resp.api_standards]
        token = resp.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and {f"std{i}" for i in range(5)} <= set(seen)


async def test_update_mask_allow_missing_and_refusals(vdb):
    await vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std(desc="old")), metadata=ADMIN)
    resp = await vdb.standards.UpdateApiStandard(
        pb.UpdateApiStandardRequest(
            api_standard=std(method="query_param", key_field="key", desc="new"),
            update_mask=FieldMask(paths=["description"]),
        ),
        metadata=ADMIN,
    )
    assert (resp.api_standard.description, resp.api_standard.key_method, resp.created) == ("new", "auth_bearer", False)
    resp = await vdb.standards.UpdateApiStandard(
        pb.UpdateApiStandardRequest(
            api_standard=pb.ApiStandard(api_standard_handle="mistral", key_method="custom_header")
        ),
        metadata=ADMIN,
    )
    assert (resp.api_standard.description, resp.api_standard.key_method) == ("new", "custom_header")
    await rpc_error(
        vdb.standards.UpdateApiStandard(pb.UpdateApiStandardRequest(api_standard=std("absent")), metadata=ADMIN),
        C.NOT_FOUND,
    )
    created = await vdb.standards.UpdateApiStandard(
        pb.UpdateApiStandardRequest(api_standard=std("absent"), allow_missing=True), metadata=ADMIN
    )
    assert created.created
    user = await vdb.create_user("alice")
    await rpc_error(
        vdb.standards.UpdateApiStandard(pb.UpdateApiStandardRequest(api_standard=std()), metadata=bearer(user)),
        C.PERMISSION_DENIED,
    )
    await rpc_error(
        vdb.standards.UpdateApiStandard(
            pb.UpdateApiStandardRequest(api_standard=std(), update_mask=FieldMask(paths=["api_standard_handle"])),
            metadata=ADMIN,
        ),
        C.INVALID_ARGUMENT,
    )
    await rpc_error(
        vdb.standards.UpdateApiStandard(
            pb.UpdateApiStandardRequest(api_standard=std(method="bogus"), update_mask=FieldMask(paths=["key_method"])),
            metadata=ADMIN,
        ),
        C.INVALID_ARGUMENT,
    )


async def test_delete_and_in_use(vdb):
    await vdb.standards.CreateApiStandard(pb.CreateApiStandardRequest(api_standard=std()), metadata=ADMIN)
    user = await vdb.create_user("alice")
    await rpc_error(
        vdb.standards.DeleteApiStandard(
            pb.DeleteApiStandardRequest(api_standard_handle="mistral"), metadata=bearer(user)
        ),
        C.PERMISSION_DENIED,
    )
    await vdb.standards.DeleteApiStandard(pb.DeleteApiStandardRequest(api_standard_handle="mistral"), metadata=ADMIN)
    await rpc_error(
        vdb.standards.DeleteApiStandard(pb.DeleteApiStandardRequest(api_standard_handle="mistral"), metadata=ADMIN),
        C.NOT_FOUND,
    )
    # openai is used by the seeded _system definitions
    err = await rpc_error(
        vdb.standards.DeleteApiStandard(pb.DeleteApiStandardRequest(api_standard_handle="openai"), metadata=ADMIN),
        C.FAILED_PRECONDITION,
    )
    assert "_system/openai-large" in err.details()
    assert await vdb.pool.fetchval("SELECT count(*) FROM api_standards WHERE api_standard_handle = 'openai'") == 1
