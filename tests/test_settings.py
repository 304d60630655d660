"""Settings validation: pure, no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdb_grpc.settings import MIB, Settings, SettingsError

GOOD_SECRET = "s" * 32


def test_defaults_are_embedded_mode():
    s = Settings.from_env({})
    assert s.embedded and s.listen == "127.0.0.1:50051" and s.max_message_bytes == 64 * MIB
    assert s.data_dir == Path("vdb-data") and s.admin_key is None and s.log_level == "info"


def test_external_mode_requires_admin_key():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"VDB_DATABASE_URL": "postgresql://u@h/db"})
    assert any("VDB_ADMIN_KEY is required" in p for p in info.value.problems)
    s = Settings.from_env({"VDB_DATABASE_URL": "postgresql://u@h/db", "VDB_ADMIN_KEY": GOOD_SECRET})
    assert not s.embedded and s.admin_key == GOOD_SECRET


def test_every_problem_reported_at_once():
    env = {
        "VDB_DATABASE_URL": "mysql://x",
        "VDB_LISTEN": "nonsense",
        "VDB_ADMIN_KEY": "short",
        "ENCRYPTION_KEY": "change-me-to-a-long-random-string-of-32-or-more-characters",
        "ENCRYPTION_KEY_PREVIOUS": "tiny",
        "VDB_MAX_MESSAGE_BYTES": "lots",
        "VDB_LOG_LEVEL": "chatty",
        "VDB_POOL_MIN_SIZE": "20",
        "VDB_POOL_MAX_SIZE": "5",
        "VDB_SHUTDOWN_GRACE_SECONDS": "-1",
        "VDB_TLS_CERT_FILE": "/nonexistent.pem",
        "VDB_MAX_BATCH_ITEMS": "0",
        "VDB_AUTH_CACHE_SECONDS": "forever",
        "VDB_HNSW_EF_SEARCH": "0",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    text = str(info.value)
    for fragment in (
        "VDB_DATABASE_URL",
        "VDB_LISTEN",
        "VDB_ADMIN_KEY must be at least 32",
        "ENCRYPTION_KEY is the example value",
        "ENCRYPTION_KEY_PREVIOUS entry 1",
        "VDB_MAX_MESSAGE_BYTES must be an integer",
        "VDB_LOG_LEVEL",
        "VDB_POOL_MIN_SIZE (20) must not exceed",
        "VDB_SHUTDOWN_GRACE_SECONDS",
        "VDB_TLS_CERT_FILE and VDB_TLS_KEY_FILE must be set together",
        "VDB_MAX_BATCH_ITEMS must be between",
        "VDB_AUTH_CACHE_SECONDS must be a number of seconds from 0 to 60",
        "VDB_HNSW_EF_SEARCH must be between",
    ):
        assert fragment in text, fragment
    assert len(info.value.problems) >= 13


def test_secrets_not_in_repr_or_errors():
    secret = "x" * 40
    s = Settings.from_env(
        {"VDB_ADMIN_KEY": secret, "ENCRYPTION_KEY": secret + "y", "ENCRYPTION_KEY_PREVIOUS": secret + "z"}
    )
    assert secret not in repr(s)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"VDB_ADMIN_KEY": "tooshortsecret"})
    assert "tooshortsecret" not in str(info.value)


def test_previous_keys_parsed_and_require_current():
    s = Settings.from_env({"ENCRYPTION_KEY": "a" * 32, "ENCRYPTION_KEY_PREVIOUS": f" {'b' * 32} , {'c' * 32},"})
    assert s.encryption_key_previous == ("b" * 32, "c" * 32)
    external = {"VDB_DATABASE_URL": "postgresql://u@h/db", "VDB_ADMIN_KEY": "a" * 32}
    with pytest.raises(SettingsError, match="ENCRYPTION_KEY_PREVIOUS is set but ENCRYPTION_KEY is not"):
        Settings.from_env({**external, "ENCRYPTION_KEY_PREVIOUS": "b" * 32})
    # embedded mode: the current key comes from the data dir
    assert Settings.from_env({"ENCRYPTION_KEY_PREVIOUS": "b" * 32}).encryption_key_previous == ("b" * 32,)


def test_numbers_and_bounds():
    s = Settings.from_env(
        {"VDB_MAX_MESSAGE_BYTES": str(8 * MIB), "VDB_STATEMENT_TIMEOUT_MS": "0", "VDB_LOG_LEVEL": "DEBUG"}
    )
    assert s.max_message_bytes == 8 * MIB and s.statement_timeout_ms == 0 and s.log_level == "debug"
    with pytest.raises(SettingsError, match="VDB_MAX_MESSAGE_BYTES must be between"):
        Settings.from_env({"VDB_MAX_MESSAGE_BYTES": "10"})
    with pytest.raises(SettingsError, match="VDB_LISTEN"):
        Settings.from_env({"VDB_LISTEN": "127.0.0.1:99999"})
    s = Settings.from_env({"VDB_AUTH_CACHE_SECONDS": "0", "VDB_HNSW_EF_SEARCH": "100"})
    assert s.auth_cache_seconds == 0 and s.hnsw_ef_search == 100
    assert Settings().auth_cache_seconds == 2.0 and Settings().hnsw_ef_search == 150
    for bad in ("-1", "61", "nan"):
        with pytest.raises(SettingsError, match="VDB_AUTH_CACHE_SECONDS"):
            Settings.from_env({"VDB_AUTH_CACHE_SECONDS": bad})
    with pytest.raises(SettingsError, match="VDB_HNSW_EF_SEARCH"):
        Settings.from_env({"VDB_HNSW_EF_SEARCH": "1001"})


def test_tls_files(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    s = Settings.from_env({"VDB_TLS_CERT_FILE": str(cert), "VDB_TLS_KEY_FILE": str(key)})
    assert s.tls_cert_file == cert and s.tls_key_file == key


def test_template_env_lists_every_setting():
    template = (Path(__file__).resolve().parents[1] / "template.env").read_text()
    names = {
        "VDB_DATABASE_URL",
        "VDB_DATA_DIR",
        "VDB_LISTEN",
        "VDB_ADMIN_KEY",
        "ENCRYPTION_KEY",
        "ENCRYPTION_KEY_PREVIOUS",
        "VDB_MAX_MESSAGE_BYTES",
        "VDB_MAX_BATCH_ITEMS",
        "VDB_LOG_LEVEL",
        "VDB_POOL_MIN_SIZE",
        "VDB_POOL_MAX_SIZE",
        "VDB_STATEMENT_TIMEOUT_MS",
        "VDB_SHUTDOWN_GRACE_SECONDS",
        "VDB_AUTH_CACHE_SECONDS",
        "VDB_HNSW_EF_SEARCH",
        "VDB_TLS_CERT_FILE",
        "VDB_TLS_KEY_FILE",
        "VDB_PROVIDER_ALLOW",
        "VDB_PROVIDER_CONCURRENCY",
        "VDB_PROVIDER_TIMEOUT_SECONDS",
        "VDB_PROVIDER_RETRIES",
        "VDB_QUERY_CACHE_SIZE",
        "VDB_QUERY_CACHE_SECONDS",
        "VDB_SLOW_SEARCH_MS",
        "VDB_INDEX_SEAL_MIN_ROWS",
        "VDB_INDEX_SEAL_MAX_ROWS",
        "VDB_INDEX_MAX_SEGMENTS",
        "VDB_INDEX_INTERIM_MIN_ROWS",
        "VDB_INDEX_BUILD_MEMORY_MB",
        "VDB_INDEX_BUILD_WORKERS",
        "VDB_INDEX_BUILD_NICE",
    }
    for name in names:
        assert f"{name}=" in template, name
    # each variable has a comment line above it
    lines = template.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#") and line.strip():
            assert lines[i - 1].startswith("#"), line


LIMIT_VARIABLES = {
    "VDB_MAX_METADATA_BYTES": "max_metadata_bytes",
    "VDB_MAX_METADATA_DEPTH": "max_metadata_depth",
    "VDB_MAX_SCHEMA_BYTES": "max_schema_bytes",
    "VDB_MAX_SCHEMA_DEPTH": "max_schema_depth",
    "VDB_MAX_SCHEMA_SUBSCHEMAS": "max_schema_subschemas",
    "VDB_MAX_TEXT_CHARS": "max_text_chars",
    "VDB_MAX_PAGE_TOKEN_CHARS": "max_page_token_chars",
}


def test_request_limits_are_settings_with_defaults_and_bounds() -> None:

    from vdb_grpc.limits import Limits

    assert Settings.from_env({}).limits == Limits()
    custom = Settings.from_env({name: "100" for name in LIMIT_VARIABLES if name != "VDB_MAX_METADATA_DEPTH"})
    assert all(getattr(custom, a) == 100 for n, a in LIMIT_VARIABLES.items() if n != "VDB_MAX_METADATA_DEPTH")
    assert custom.limits.schema_subschemas == 100 and custom.limits.page_token_chars == 100
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"VDB_MAX_METADATA_DEPTH": "33", "VDB_MAX_PAGE_TOKEN_CHARS": "10", "VDB_MAX_TEXT_CHARS": "x"})
    text = str(info.value)
    assert "VDB_MAX_METADATA_DEPTH must be between 1 and 32" in text
    assert "VDB_MAX_PAGE_TOKEN_CHARS must be between 64" in text
    assert "VDB_MAX_TEXT_CHARS must be an integer" in text
    template = (Path(__file__).parent.parent / "template.env").read_text()
    for name in LIMIT_VARIABLES:
        assert f"{name}=" in template, name


@pytest.mark.parametrize(
    ("variable", "field", "default", "accepted", "refused"),
    [
        # a Unix nice value
        ("VDB_INDEX_BUILD_NICE", "index_build_nice", 10, {"0": 0, "19": 19}, ("20", "-1", "low")),
        # a row count, 0 = never
        ("VDB_INDEX_INTERIM_MIN_ROWS", "index_interim_min_rows", 20_000, {"0": 0, "5000": 5000}, ("-1", "many", "1e9")),
        # milliseconds, 0 = never
        ("VDB_SLOW_SEARCH_MS", "slow_search_ms", 1000, {"0": 0, "250": 250}, ("-5", "slow", "0.5")),
    ],
)
def test_integer_settings_keep_to_their_bounds(
    variable: str, field: str, default: int, accepted: dict[str, int], refused: tuple[str, ...]
) -> None:
    assert getattr(Settings.from_env({}), field) == default
    for text, value in accepted.items():
        assert getattr(Settings.from_env({variable: text}), field) == value
    for bad in refused:
        with pytest.raises(SettingsError) as info:
            Settings.from_env({variable: bad})
        assert variable in str(info.value)
