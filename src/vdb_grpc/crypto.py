"""Encryption at rest for the provider API keys of LLM service instances.

Pure code: no I/O, no environment reads, no logging. The raw secrets (``ENCRYPTION_KEY`` and
``ENCRYPTION_KEY_PREVIOUS``) are handed to :class:`ApiKeyCipher` by the composition root.

Algorithm: AES-256-GCM; the 256-bit key is SHA-256 of the secret's UTF-8 bytes (as in the seed); every
encryption draws a fresh 96-bit nonce from ``os.urandom``.

Envelope layout (what :meth:`ApiKeyCipher.encrypt` returns), byte by byte::

    offset  size  field
    0       4     marker   b"VDB\\x01" -- magic b"VDB" + format version 0x01
    4       8     key id   SHA-256(b"vdb-grpc/api-key-id/v1\\x00" + derived key)[:8]
    12      12    nonce    os.urandom(12)
    24      n     ciphertext (n = UTF-8 length of the API key, may be 0)
    24+n    16    GCM tag

The associated data is ``header + UTF-8(f"{owner}/{instance_handle}")`` where ``header`` is bytes 0..11
(marker and key id). Binding the header means neither the version nor the key id can be altered without
failing authentication; binding the instance means a ciphertext copied to another row does not decrypt.
Handles never contain ``/`` and the header has a fixed length, so the associated data is unambiguous.
The key id is a truncated hash of the derived key under a domain-separation label: it tells which
configured key made a blob and reveals nothing useful about the key itself.

Legacy format (what the Go seed service wrote): ``nonce (12) || ciphertext || tag (16)`` with no marker and
no associated data. Blobs that do not start with the marker are decrypted as legacy, trying the current key
and then each previous key. A legacy blob whose random nonce happens to begin with the marker (probability
2**-32) is still handled: when envelope decryption fails, the legacy interpretation is tried as well.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["ApiKeyCipher", "ApiKeyDecryptionError"]

_MARKER = b"VDB\x01"
_KEY_ID_LABEL = b"vdb-grpc/api-key-id/v1\x00"
_KEY_ID_SIZE = 8
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = len(_MARKER) + _KEY_ID_SIZE
_ENVELOPE_MIN_SIZE = _HEADER_SIZE + _NONCE_SIZE + _TAG_SIZE
_LEGACY_MIN_SIZE = _NONCE_SIZE + _TAG_SIZE


class ApiKeyDecryptionError(Exception):
    """A stored API key could not be decrypted.

    Raised for every failure mode (truncated or malformed blob, unknown key id, authentication failure
    because of a wrong key, tampering or a blob bound to another instance, plaintext not UTF-8). The message
    never contains key material or plaintext, and the exception is raised without a chained cause so that
    no underlying exception (which might hold decrypted bytes) travels with it.
    """


class _Key:
    """One derived AES-256-GCM key with its public key id. Holds neither the secret nor the raw key."""

    __slots__ = ("aead", "key_id")

    def __init__(self, secret: str) -> None:
        derived = hashlib.sha256(secret.encode("utf-8")).digest()
        self.aead = AESGCM(derived)
        self.key_id = hashlib.sha256(_KEY_ID_LABEL + derived).digest()[:_KEY_ID_SIZE]

    def __repr__(self) -> str:
        return f"_Key(key_id={self.key_id.hex()!r})"


def _instance_binding(owner: str, instance_handle: str) -> bytes:
    """Return the UTF-8 bytes of ``owner/instance_handle`` used in the associated data.

    Raises:
        ValueError: ``owner`` or ``instance_handle`` is not encodable as UTF-8 (lone surrogates).
    """
    try:
        return f"{owner}/{instance_handle}".encode()
    except UnicodeEncodeError:
        pass
    raise ValueError("owner and instance_handle must be valid Unicode text")


def _open(aead: AESGCM, nonce: bytes, sealed: bytes, associated_data: bytes | None) -> bytes | None:
    """Return the plaintext bytes, or None when authentication fails."""
    try:
        return aead.decrypt(nonce, sealed, associated_data)
    except InvalidTag:
        return None


class ApiKeyCipher:
    """Encrypts and decrypts provider API keys, with key rotation and legacy-format support.

    Only the current key encrypts; the current and the previous keys all decrypt. The cipher keeps no copy
    of the secrets or the derived keys beyond the AES-GCM objects, and its ``repr`` shows only key ids.
    """

    __slots__ = ("_current", "_keys_by_id", "_ordered")

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        """Derive the keys.

        Args:
            current: The raw ``ENCRYPTION_KEY`` secret; encrypts and decrypts.
            previous: Raw secrets from ``ENCRYPTION_KEY_PREVIOUS``, tried for decryption only, in order.

        Raises:
            ValueError: A secret is empty. (Length and strength rules live in settings.)
            TypeError: ``previous`` is a single string rather than a sequence of strings.
        """
        if isinstance(previous, str):
            # A str is itself a Sequence[str]: without this check each character would become a key.
            raise TypeError("previous must be a sequence of secrets, not a single string")
        if not current:
            raise ValueError("the current encryption secret must not be empty")
        if any(not secret for secret in previous):
            raise ValueError("previous encryption secrets must not be empty")
        self._current = _Key(current)
        self._ordered: tuple[_Key, ...] = (self._current,)
        self._keys_by_id: dict[bytes, _Key] = {self._current.key_id: self._current}
        for secret in previous:
            key = _Key(secret)
            # The same secret listed twice (or also as current) adds nothing.
            if key.key_id not in self._keys_by_id:
                self._keys_by_id[key.key_id] = key
                self._ordered += (key,)

    def __repr__(self) -> str:
        return f"ApiKeyCipher(key_id={self.key_id!r}, previous_keys={len(self._ordered) - 1})"

    @property
    def key_id(self) -> str:
        """Hex id of the current key (safe to log: it reveals nothing useful about the key)."""
        return self._current.key_id.hex()

    def encrypt(self, plaintext: str, *, owner: str, instance_handle: str) -> bytes:
        """Encrypt an API key with the current key, bound to its instance.

        Args:
            plaintext: The provider API key (may be empty).
            owner: Handle of the user owning the instance.
            instance_handle: Handle of the LLM service instance.

        Returns:
            The envelope described in the module docstring.

        Raises:
            ValueError: ``plaintext``, ``owner`` or ``instance_handle`` is not encodable as UTF-8.
        """
        try:
            data = plaintext.encode("utf-8")
        except UnicodeEncodeError:
            data = None
        if data is None:
            # Raised outside the except block: the UnicodeEncodeError holds the plaintext.
            raise ValueError("the API key must be valid Unicode text")
        header = _MARKER + self._current.key_id
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._current.aead.encrypt(nonce, data, header + _instance_binding(owner, instance_handle))
        return header + nonce + sealed

    def decrypt(self, blob: bytes, *, owner: str, instance_handle: str) -> str:
        """Decrypt an API key stored for the given instance.

        Args:
            blob: An envelope from :meth:`encrypt` or a legacy blob written by the Go seed service.
            owner: Handle of the user owning the instance the blob is stored for.
            instance_handle: Handle of that instance.

        Returns:
            The API key.

        Raises:
            ApiKeyDecryptionError: The blob is malformed, was made with an unknown key, was tampered with,
                belongs to another instance, or does not decrypt to UTF-8 text.
            ValueError: ``owner`` or ``instance_handle`` is not encodable as UTF-8.
        """
        blob = bytes(blob)
        binding = _instance_binding(owner, instance_handle)
        data: bytes | None = None
        reason: str | None = None
        if blob.startswith(_MARKER):
            data, reason = self._open_envelope(blob, binding)
        if data is None:
            # Also reached for marked blobs: a legacy nonce may begin with the marker by chance.
            data = self._open_legacy(blob)
        if data is None:
            raise ApiKeyDecryptionError(reason or self._legacy_failure_reason(blob))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        # Raised outside the except block: the UnicodeDecodeError holds the decrypted bytes.
        raise ApiKeyDecryptionError("decrypted API key is not valid UTF-8")

    def needs_reencryption(self, blob: bytes) -> bool:
        """Tell whether a stored blob should be rewritten with the current key.

        Args:
            blob: A stored encrypted API key.

        Returns:
            False only for a well-formed envelope made with the current key; True for legacy blobs,
            envelopes made with any other key, and malformed blobs (so a rotation run surfaces them, as
            :meth:`reencrypt` will then fail on them, instead of skipping them silently).
        """
        blob = bytes(blob)
        return not (
            len(blob) >= _ENVELOPE_MIN_SIZE
            and blob.startswith(_MARKER)
            and blob[len(_MARKER) : _HEADER_SIZE] == self._current.key_id
        )

    def reencrypt(self, blob: bytes, *, owner: str, instance_handle: str) -> bytes:
        """Decrypt a stored blob with whichever key made it and encrypt it again with the current key.

        Args:
            blob: An envelope or legacy blob.
            owner: Handle of the user owning the instance.
            instance_handle: Handle of the instance.

        Returns:
            A fresh envelope made with the current key, bound to the same instance.

        Raises:
            ApiKeyDecryptionError: ``blob`` does not decrypt (see :meth:`decrypt`).
        """
        plaintext = self.decrypt(blob, owner=owner, instance_handle=instance_handle)
        return self.encrypt(plaintext, owner=owner, instance_handle=instance_handle)

    def _open_envelope(self, blob: bytes, binding: bytes) -> tuple[bytes | None, str | None]:
        """Authenticate and decrypt an envelope; return (plaintext, None) or (None, failure reason)."""
        if len(blob) < _ENVELOPE_MIN_SIZE:
            return None, "encrypted API key is truncated"
        header = blob[:_HEADER_SIZE]
        key = self._keys_by_id.get(header[len(_MARKER) :])
        if key is None:
            return None, (
                f"encrypted API key was made with key id {header[len(_MARKER) :].hex()}, "
                "which is neither the current nor a previous encryption key"
            )
        nonce = blob[_HEADER_SIZE : _HEADER_SIZE + _NONCE_SIZE]
        data = _open(key.aead, nonce, blob[_HEADER_SIZE + _NONCE_SIZE :], header + binding)
        if data is None:
            return None, ("encrypted API key failed authentication: tampered with, or stored for a different instance")
        return data, None

    def _open_legacy(self, blob: bytes) -> bytes | None:
        """Decrypt a seed-format blob with the current key, then each previous key; None if none fits."""
        if len(blob) < _LEGACY_MIN_SIZE:
            return None
        nonce, sealed = blob[:_NONCE_SIZE], blob[_NONCE_SIZE:]
        for key in self._ordered:
            data = _open(key.aead, nonce, sealed, None)
            if data is not None:
                return data
        return None

    @staticmethod
    def _legacy_failure_reason(blob: bytes) -> str:
        if len(blob) < _LEGACY_MIN_SIZE:
            return "encrypted API key is truncated"
        return "legacy-format API key does not decrypt with the current or any previous encryption key"
