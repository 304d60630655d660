"""Unit tests for vdb_grpc.crypto (pure: no database)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vdb_grpc.crypto import ApiKeyCipher, ApiKeyDecryptionError

CURRENT = "current-secret-0123456789-abcdefghijklmnop"
OLD = "old-secret-9876543210-zyxwvutsrqponmlkjihgf"
OTHER = "unrelated-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
PLAINTEXT = "sk-proj-THIS-IS-THE-PROVIDER-KEY-42"
OWNER = "alice"
HANDLE = "openai-large"
AT = {"owner": OWNER, "instance_handle": HANDLE}

HEADER_SIZE = 12  # marker (4) + key id (8)
NONCE_SIZE = 12
TAG_SIZE = 16


def legacy_blob(secret: str, plaintext: str) -> bytes:
    """Build a blob exactly as the Go seed service did: nonce || AES-GCM(sha256(secret)) with no AAD."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(hashlib.sha256(secret.encode()).digest()).encrypt(nonce, plaintext.encode(), None)


@pytest.fixture
def cipher() -> ApiKeyCipher:
    return ApiKeyCipher(CURRENT)


def test_round_trip(cipher: ApiKeyCipher) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    assert cipher.decrypt(blob, **AT) == PLAINTEXT
    assert PLAINTEXT.encode() not in blob


def test_envelope_layout(cipher: ApiKeyCipher) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    assert blob[:4] == b"VDB\x01"
    assert blob[4:12].hex() == cipher.key_id
    assert len(blob) == HEADER_SIZE + NONCE_SIZE + len(PLAINTEXT.encode()) + TAG_SIZE


def test_key_id_is_stable_distinct_and_not_the_key() -> None:
    a, b = ApiKeyCipher(CURRENT), ApiKeyCipher(CURRENT)
    assert a.key_id == b.key_id
    assert len(a.key_id) == 16
    assert a.key_id != ApiKeyCipher(OLD).key_id
    derived = hashlib.sha256(CURRENT.encode()).digest()
    assert a.key_id not in (derived.hex(), hashlib.sha256(derived).hexdigest()[:16])


@pytest.mark.parametrize("plaintext", [PLAINTEXT, "", "ключ-🔑-clé-鍵"])
def test_encryptions_of_same_plaintext_differ(cipher: ApiKeyCipher, plaintext: str) -> None:
    first, second = cipher.encrypt(plaintext, **AT), cipher.encrypt(plaintext, **AT)
    assert first != second
    assert first[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE] != second[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]


@pytest.mark.parametrize("plaintext", ["", "ключ-🔑-clé-鍵", "x" * 10_000])
def test_edge_plaintexts_round_trip(cipher: ApiKeyCipher, plaintext: str) -> None:
    assert cipher.decrypt(cipher.encrypt(plaintext, **AT), **AT) == plaintext


def test_wrong_key_fails(cipher: ApiKeyCipher) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    with pytest.raises(ApiKeyDecryptionError):
        ApiKeyCipher(OTHER).decrypt(blob, **AT)


def test_every_tampered_byte_fails(cipher: ApiKeyCipher) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    assert cipher.decrypt(blob, **AT) == PLAINTEXT
    for position in range(len(blob)):  # marker, key id, nonce, ciphertext and tag
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= flip
            with pytest.raises(ApiKeyDecryptionError):
                cipher.decrypt(bytes(tampered), **AT)


def test_tampered_key_id_fails_even_when_it_names_a_configured_key() -> None:
    old_blob = ApiKeyCipher(OLD).encrypt(PLAINTEXT, **AT)
    rotated = ApiKeyCipher(CURRENT, previous=[OLD])
    assert rotated.decrypt(old_blob, **AT) == PLAINTEXT
    relabelled = old_blob[:4] + bytes.fromhex(rotated.key_id) + old_blob[HEADER_SIZE:]
    with pytest.raises(ApiKeyDecryptionError):
        rotated.decrypt(relabelled, **AT)


def test_appended_or_removed_bytes_fail(cipher: ApiKeyCipher) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    for bad in (blob + b"\x00", blob[:-1], blob[:HEADER_SIZE] + blob[HEADER_SIZE + 1 :]):
        with pytest.raises(ApiKeyDecryptionError):
            cipher.decrypt(bad, **AT)


@pytest.mark.parametrize(
    ("owner", "instance_handle"),
    [("bob", HANDLE), (OWNER, "openai-small"), ("bob", "openai-small"), ("alice/openai", "large")],
)
def test_ciphertext_moved_to_another_instance_fails(
    cipher: ApiKeyCipher, owner: str, instance_handle: str
) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    with pytest.raises(ApiKeyDecryptionError):
        cipher.decrypt(blob, owner=owner, instance_handle=instance_handle)


def test_legacy_seed_format_decrypts(cipher: ApiKeyCipher) -> None:
    blob = legacy_blob(CURRENT, PLAINTEXT)
    # Legacy blobs carry no instance binding, so any owner/handle works.
    assert cipher.decrypt(blob, **AT) == PLAINTEXT
    assert cipher.decrypt(blob, owner="bob", instance_handle="other") == PLAINTEXT


@pytest.mark.parametrize("plaintext", ["", "ключ-🔑-clé-鍵"])
def test_legacy_edge_plaintexts_decrypt(cipher: ApiKeyCipher, plaintext: str) -> None:
    assert cipher.decrypt(legacy_blob(CURRENT, plaintext), **AT) == plaintext


def test_legacy_blob_with_previous_key_decrypts() -> None:
    blob = legacy_blob(OLD, PLAINTEXT)
    assert ApiKeyCipher(CURRENT, previous=[OTHER, OLD]).decrypt(blob, **AT) == PLAINTEXT
    with pytest.raises(ApiKeyDecryptionError):
        ApiKeyCipher(CURRENT, previous=[OTHER]).decrypt(blob, **AT)


def test_legacy_blob_with_wrong_key_or_tampering_fails(cipher: ApiKeyCipher) -> None:
    blob = legacy_blob(OTHER, PLAINTEXT)
    with pytest.raises(ApiKeyDecryptionError):
        cipher.decrypt(blob, **AT)
    good = legacy_blob(CURRENT, PLAINTEXT)
    for position in range(len(good)):
        tampered = bytearray(good)
        tampered[position] ^= 0x01
        with pytest.raises(ApiKeyDecryptionError):
            cipher.decrypt(bytes(tampered), **AT)


def test_legacy_blob_whose_nonce_starts_with_the_marker_decrypts(cipher: ApiKeyCipher) -> None:
    # A random legacy nonce begins with the marker with probability 2**-32; it must still decrypt.
    nonce = b"VDB\x01" + os.urandom(NONCE_SIZE - 4)
    blob = nonce + AESGCM(hashlib.sha256(CURRENT.encode()).digest()).encrypt(nonce, PLAINTEXT.encode(), None)
    assert cipher.decrypt(blob, **AT) == PLAINTEXT
    assert cipher.needs_reencryption(blob)


def test_previous_key_blob_decrypts_only_when_configured() -> None:
    blob = ApiKeyCipher(OLD).encrypt(PLAINTEXT, **AT)
    assert ApiKeyCipher(CURRENT, previous=[OLD]).decrypt(blob, **AT) == PLAINTEXT
    assert ApiKeyCipher(CURRENT, previous=(OTHER, OLD)).decrypt(blob, **AT) == PLAINTEXT
    with pytest.raises(ApiKeyDecryptionError, match="key id"):
        ApiKeyCipher(CURRENT).decrypt(blob, **AT)
    with pytest.raises(ApiKeyDecryptionError):
        ApiKeyCipher(CURRENT, previous=[OTHER]).decrypt(blob, **AT)


def test_previous_key_blob_is_still_bound_to_its_instance() -> None:
    blob = ApiKeyCipher(OLD).encrypt(PLAINTEXT, **AT)
    with pytest.raises(ApiKeyDecryptionError):
        ApiKeyCipher(CURRENT, previous=[OLD]).decrypt(blob, owner="bob", instance_handle=HANDLE)


def test_needs_reencryption() -> None:
    rotated = ApiKeyCipher(CURRENT, previous=[OLD])
    assert rotated.needs_reencryption(rotated.encrypt(PLAINTEXT, **AT)) is False
    assert rotated.needs_reencryption(rotated.encrypt("", **AT)) is False
    assert rotated.needs_reencryption(ApiKeyCipher(OLD).encrypt(PLAINTEXT, **AT)) is True
    assert rotated.needs_reencryption(ApiKeyCipher(OTHER).encrypt(PLAINTEXT, **AT)) is True
    assert rotated.needs_reencryption(legacy_blob(CURRENT, PLAINTEXT)) is True
    assert rotated.needs_reencryption(legacy_blob(OLD, PLAINTEXT)) is True


def test_needs_reencryption_flags_malformed_blobs(cipher: ApiKeyCipher) -> None:
    blob = cipher.encrypt(PLAINTEXT, **AT)
    assert cipher.needs_reencryption(b"") is True
    assert cipher.needs_reencryption(blob[: HEADER_SIZE + NONCE_SIZE]) is True


def test_reencrypt_output_decrypts_with_only_the_new_key() -> None:
    rotated = ApiKeyCipher(CURRENT, previous=[OLD])
    only_new = ApiKeyCipher(CURRENT)
    for blob in (ApiKeyCipher(OLD).encrypt(PLAINTEXT, **AT), legacy_blob(OLD, PLAINTEXT)):
        with pytest.raises(ApiKeyDecryptionError):
            only_new.decrypt(blob, **AT)
        fresh = rotated.reencrypt(blob, **AT)
        assert rotated.needs_reencryption(fresh) is False
        assert only_new.decrypt(fresh, **AT) == PLAINTEXT
        with pytest.raises(ApiKeyDecryptionError):
            ApiKeyCipher(OLD).decrypt(fresh, **AT)
        with pytest.raises(ApiKeyDecryptionError):
            only_new.decrypt(fresh, owner="bob", instance_handle=HANDLE)


def test_reencrypt_of_undecryptable_blob_fails(cipher: ApiKeyCipher) -> None:
    with pytest.raises(ApiKeyDecryptionError):
        cipher.reencrypt(ApiKeyCipher(OTHER).encrypt(PLAINTEXT, **AT), **AT)


def test_every_truncation_fails_cleanly(cipher: ApiKeyCipher) -> None:
    for plaintext in ("", PLAINTEXT):
        blob = cipher.encrypt(plaintext, **AT)
        for length in range(len(blob)):
            with pytest.raises(ApiKeyDecryptionError):
                cipher.decrypt(blob[:length], **AT)
    legacy = legacy_blob(CURRENT, PLAINTEXT)
    for length in range(len(legacy)):
        with pytest.raises(ApiKeyDecryptionError):
            cipher.decrypt(legacy[:length], **AT)


@pytest.mark.parametrize("blob", [b"", b"V", b"VDB", b"VDB\x01", b"VDB\x01" + b"\x00" * 8, b"\x00" * 27])
def test_short_garbage_fails_cleanly(cipher: ApiKeyCipher, blob: bytes) -> None:
    with pytest.raises(ApiKeyDecryptionError, match="truncated"):
        cipher.decrypt(blob, **AT)


def test_non_utf8_plaintext_fails_without_leaking_it(cipher: ApiKeyCipher) -> None:
    secret_bytes = b"\xffsk-LEAKED-BYTES"
    nonce = os.urandom(NONCE_SIZE)
    blob = nonce + AESGCM(hashlib.sha256(CURRENT.encode()).digest()).encrypt(nonce, secret_bytes, None)
    with pytest.raises(ApiKeyDecryptionError) as excinfo:
        cipher.decrypt(blob, **AT)
    assert "LEAKED" not in str(excinfo.value)
    # No chained UnicodeDecodeError carrying the decrypted bytes.
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None


def test_unencodable_plaintext_is_rejected_without_leaking_it(cipher: ApiKeyCipher) -> None:
    with pytest.raises(ValueError) as excinfo:
        cipher.encrypt("sk-LEAKED\ud800", **AT)
    assert "LEAKED" not in str(excinfo.value)
    assert excinfo.value.__context__ is None


def test_empty_secret_is_rejected() -> None:
    with pytest.raises(ValueError):
        ApiKeyCipher("")
    with pytest.raises(ValueError):
        ApiKeyCipher(CURRENT, previous=[OLD, ""])


def test_single_string_as_previous_is_rejected() -> None:
    with pytest.raises(TypeError):
        ApiKeyCipher(CURRENT, previous=OLD)


def test_duplicate_previous_keys_are_harmless() -> None:
    cipher = ApiKeyCipher(CURRENT, previous=[CURRENT, OLD, OLD])
    assert "previous_keys=1" in repr(cipher)
    assert cipher.decrypt(ApiKeyCipher(OLD).encrypt(PLAINTEXT, **AT), **AT) == PLAINTEXT


def test_repr_and_errors_reveal_no_secret_or_plaintext() -> None:
    cipher = ApiKeyCipher(CURRENT, previous=[OLD])
    forbidden = [
        CURRENT,
        OLD,
        PLAINTEXT,
        hashlib.sha256(CURRENT.encode()).hexdigest(),
        hashlib.sha256(OLD.encode()).hexdigest(),
    ]
    texts = [repr(cipher), str(cipher)]
    blob = cipher.encrypt(PLAINTEXT, **AT)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    failures: list[Callable[[], object]] = [
        lambda: cipher.decrypt(tampered, **AT),
        lambda: cipher.decrypt(blob, owner="bob", instance_handle=HANDLE),
        lambda: cipher.decrypt(blob[:20], **AT),
        lambda: ApiKeyCipher(OTHER).decrypt(blob, **AT),
        lambda: ApiKeyCipher(OTHER).decrypt(legacy_blob(CURRENT, PLAINTEXT), **AT),
    ]
    for failure in failures:
        with pytest.raises(ApiKeyDecryptionError) as excinfo:
            failure()
        texts += [str(excinfo.value), repr(excinfo.value)]
        assert excinfo.value.__cause__ is None
    for text in texts:
        for item in forbidden:
            assert item not in text
    assert cipher.key_id in repr(cipher)
