"""What every request shape shares: the target of a call, the shape interface and the observability hook."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: Documents (uploads) and queries (text search) are embedded differently where a provider distinguishes them.
EmbedForm = Literal["document", "query"]


class ProviderObserver(Protocol):
    """Told of every provider request and retry (metrics pick this up). Labels never hold a key or a text.

    ``instance`` is "owner/handle"; ``outcome`` one of "ok", "auth_refused", "rate_limited", "unavailable",
    "bad_response", "too_long", "refused" (another 4xx), "egress_refused" (no request sent); ``reason`` of a
    retry one of "rate_limited", "server_error", "timeout", "connection".
    """

    def provider_call(self, *, shape: str, instance: str, outcome: str, seconds: float) -> None: ...

    def provider_retry(self, *, shape: str, instance: str, reason: str) -> None: ...


class _NullObserver:
    def provider_call(self, *, shape: str, instance: str, outcome: str, seconds: float) -> None:
        pass

    def provider_retry(self, *, shape: str, instance: str, reason: str) -> None:
        pass


NULL_OBSERVER: ProviderObserver = _NullObserver()


@dataclass(frozen=True)
class ProviderTarget:
    """An instance as a provider call needs it, with its API standard. The key stays encrypted until the call.

    Attributes:
        instance: "owner/handle" (also the associated data the key is bound to).
        instance_id: Internal id (the concurrency limit is per instance).
        shape: Request shape of the instance's API standard ("" = none).
        max_inputs: The standard's texts-per-request limit; 0 = the shape's.
        encrypted_key: The stored key envelope, None when there is none.
        legacy_key: A plaintext key left by migration 0004 that the re-encryption has not moved yet.
    """

    instance: str
    instance_id: int
    endpoint: str
    api_standard: str
    shape: str
    model: str
    dimensions: int
    context_limit: int
    key_method: str
    key_field: str
    key_optional: bool
    max_inputs: int
    encrypted_key: bytes | None = field(default=None, repr=False)
    legacy_key: str | None = field(default=None, repr=False)

    @property
    def owner(self) -> str:
        return self.instance.split("/", 1)[0]

    @property
    def handle(self) -> str:
        return self.instance.split("/", 1)[1]

    @property
    def has_key(self) -> bool:
        return self.encrypted_key is not None or bool(self.legacy_key)

    def fingerprint(self) -> bytes:
        """What decides the vector a text gets: the instance, its endpoint, shape, model and dimensions (not the
        key, not the description). Stored vectors are reused only while this is unchanged."""
        ident = "\n".join((str(self.instance_id), self.endpoint, self.shape, self.model, str(self.dimensions)))
        return hashlib.sha256(ident.encode()).digest()


class Shape(Protocol):
    """One provider request shape."""

    name: str
    #: Most texts in one request (the provider's documented limit).
    max_inputs: int

    def url(self, target: ProviderTarget) -> str:
        """The URL to POST to."""
        ...

    def body(self, target: ProviderTarget, texts: list[str], form: EmbedForm) -> dict[str, Any]:
        """The JSON request body."""
        ...

    def vectors(self, answer: Any) -> list[Any]:
        """The vectors of a successful answer, in input order.

        Raises:
            ValueError: the answer does not have the shape's structure (message safe to show).
        """
        ...
