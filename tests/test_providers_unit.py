"""Pure parts of server-side embedding (egress policy, Retry-After, RetryInfo, summaries, settings, shapes) and
the API standards' new fields."""

from __future__ import annotations

import ipaddress
import logging
import time

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from harness import ADMIN, ANON, rpc_error

from vdb_grpc import errors
from vdb_grpc.domain.texts import _QueryCache
from vdb_grpc.interceptors import rich_status
from vdb_grpc.providers import client as c
from vdb_grpc.providers.egress import EgressPolicy, is_public
from vdb_grpc.providers.gemini import SHAPE as GEMINI
from vdb_grpc.providers.shape import ProviderTarget
from vdb_grpc.settings import Settings, SettingsError
from vdb_grpc.v1 import api_standard_pb2 as spb


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address checked, not bound
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_allow_list_entries_are_hosts_or_networks() -> None:
    policy = EgressPolicy(["127.0.0.1", "10.0.0.0/8", "ollama.internal", "[::1]"])
    ip = ipaddress.ip_address
    assert policy.allows("x", ip("127.0.0.1")) and policy.allows("x", ip("10.9.9.9")) and policy.allows("x", ip("::1"))
    assert not policy.allows("x", ip("127.0.0.2")) and not policy.allows("x", ip("169.254.169.254"))
    assert policy.allows("Ollama.Internal.", ip("192.168.5.5"))  # the host itself is allowed, whatever it resolves to
    assert not EgressPolicy().allows("x", ip("127.0.0.1"))


async def test_refusal_names_the_instance_and_the_setting_without_any_lookup() -> None:
    with pytest.raises(errors.FailedPrecondition) as info:
        await EgressPolicy(["127.0.0.1"]).resolve("169.254.169.254", 80, "alice/inst")
    assert "alice/inst" in info.value.message and "VDB_PROVIDER_ALLOW" in info.value.message
    assert (await EgressPolicy(["127.0.0.1"]).resolve("127.0.0.1", 80, "alice/inst")).address == "127.0.0.1"


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert c.retry_after_seconds("3") == 3.0
    assert c.retry_after_seconds(None) is None and c.retry_after_seconds("soon") is None
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 120))
    assert 110 < (c.retry_after_seconds(date, now) or 0) <= 121


def test_retry_after_becomes_google_rpc_retry_info() -> None:
    status = rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted("slow down", retry_after_seconds=2.5))
    [detail] = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (2, 500_000_000)
    assert rich_status(grpc.StatusCode.INTERNAL, errors.VdbError("x")).details == []


def test_provider_messages_are_summarised_without_the_key() -> None:
    key = "sk-secret-abcdef0123456789"
    response = httpx.Response(500, json={"error": {"message": f"bad key {key} " + "y" * 1000}})
    summary = c._summary(response, key)
    assert key not in summary and summary.startswith("HTTP 500: bad key [redacted]") and len(summary) < 220


def test_httpx_request_log_lines_lose_their_query_string() -> None:
    record = logging.LogRecord("httpx", logging.INFO, "x", 1, "HTTP Request: %s %s", (
        "POST", httpx.URL("http://h/p?key=sk-secret")), None)  # fmt: skip
    assert c._RedactQuery().filter(record)
    assert "sk-secret" not in record.getMessage()


def test_gemini_url_accepts_a_method_url_or_the_api_base() -> None:
    def url(endpoint: str) -> str:
        t = ProviderTarget("a/b", 1, endpoint, "gemini", "gemini", "gemini-embedding-001", 8, 100, "", "", False, 0)
        return GEMINI.url(t)

    base = "https://generativelanguage.googleapis.com/v1beta"
    want = f"{base}/models/gemini-embedding-001:batchEmbedContents"
    assert url(f"{base}/models/gemini-embedding-001:embedContent") == want
    assert url(want) == want and url(base) == want and url(base + "/") == want


def test_fingerprint_changes_with_what_makes_the_vector_and_not_with_the_key() -> None:
    t = ProviderTarget("a/b", 1, "http://h/e", "openai", "openai", "m", 8, 100, "auth_bearer", "", False, 0, b"k1")
    same = ProviderTarget("a/b", 1, "http://h/e", "openai", "openai", "m", 8, 100, "auth_bearer", "", False, 0, b"k2")
    assert t.fingerprint() == same.fingerprint()
    for changed in ("http://h/other", "m2"):
        other = ProviderTarget("a/b", 1, changed if "http" in changed else "http://h/e", "openai", "openai",
                               changed if "http" not in changed else "m", 8, 100, "auth_bearer", "", False, 0)  # fmt: skip
        assert other.fingerprint() != t.fingerprint()
    assert "k1" not in repr(t)


def test_query_cache_is_bounded_and_expires() -> None:
    import numpy as np

    cache = _QueryCache(2, 60)
    for i in range(3):
        cache.put((b"f", str(i)), np.zeros(1))
    assert cache.get((b"f", "0")) is None and cache.get((b"f", "2")) is not None
    expired = _QueryCache(10, 0.0)
    expired.put((b"f", "x"), np.zeros(1))
    assert expired.get((b"f", "x")) is None


def test_provider_settings_are_parsed_and_checked() -> None:
    s = Settings.from_env({"VDB_PROVIDER_ALLOW": "127.0.0.1, ollama.internal ,10.0.0.0/8", "VDB_PROVIDER_RETRIES": "5"})
    assert s.provider_allow == ("127.0.0.1", "ollama.internal", "10.0.0.0/8") and s.provider_retries == 5
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {"VDB_PROVIDER_ALLOW": "http://x/", "VDB_PROVIDER_CONCURRENCY": "0", "VDB_PROVIDER_TIMEOUT_SECONDS": "x"}
        )
    text = str(info.value)
    assert (
        "VDB_PROVIDER_ALLOW" in text and "VDB_PROVIDER_CONCURRENCY" in text and "VDB_PROVIDER_TIMEOUT_SECONDS" in text
    )


async def test_seeded_standards_name_their_request_shapes(vdb) -> None:
    resp = await vdb.standards.ListApiStandards(spb.ListApiStandardsRequest(), metadata=ANON)
    got = {s.api_standard_handle: (s.request_shape, s.key_optional) for s in resp.api_standards}
    assert got == {
        "openai": ("openai", False),
        "cohere": ("cohere", False),
        "gemini": ("gemini", False),
        "ollama": ("ollama", True),
        "openai-compatible": ("openai", True),
    }


async def test_standards_refuse_an_unknown_shape_and_update_the_new_fields(vdb) -> None:
    err = await rpc_error(
        vdb.standards.CreateApiStandard(
            spb.CreateApiStandardRequest(
                api_standard=spb.ApiStandard(
                    api_standard_handle="mistral", key_method="auth_bearer", request_shape="soap"
                )
            ),
            metadata=ADMIN,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "request_shape" in err.details()
    await rpc_error(
        vdb.standards.CreateApiStandard(
            spb.CreateApiStandardRequest(
                api_standard=spb.ApiStandard(api_standard_handle="mistral", key_method="auth_bearer", max_inputs=-1)
            ),
            metadata=ADMIN,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    resp = await vdb.standards.UpdateApiStandard(
        spb.UpdateApiStandardRequest(
            api_standard=spb.ApiStandard(
                api_standard_handle="mistral", key_method="auth_bearer", request_shape="openai", max_inputs=64
            ),
            allow_missing=True,
        ),
        metadata=ADMIN,
    )
    assert (resp.api_standard.request_shape, resp.api_standard.max_inputs, resp.created) == ("openai", 64, True)
