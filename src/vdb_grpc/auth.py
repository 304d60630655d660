"""Principals and API keys.

User keys are 32 bytes from the OS CSPRNG, shown once as 64 hex characters. Only their SHA-256 (hex) is
stored: a key has 256 bits of entropy, so a fast hash is as safe as a slow one and lets a key be found by an
indexed lookup. The admin key comes from the settings and is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum

from vdb_grpc.errors import Unauthenticated

SYSTEM_USER = "_system"


class PrincipalKind(Enum):
    """Who is calling."""

    ADMIN = "admin"
    USER = "user"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one RPC."""

    kind: PrincipalKind
    user_handle: str | None = None

    @property
    def is_admin(self) -> bool:
        """True for the admin key."""
        return self.kind is PrincipalKind.ADMIN

    @property
    def is_anonymous(self) -> bool:
        """True when no key was presented."""
        return self.kind is PrincipalKind.ANONYMOUS

    def label(self) -> str:
        """Short description for logs: "admin", "anonymous" or "user:<handle>"."""
        return f"user:{self.user_handle}" if self.kind is PrincipalKind.USER else self.kind.value

    def require_authenticated(self) -> Principal:
        """Return self, or raise UNAUTHENTICATED for anonymous callers."""
        if self.is_anonymous:
            raise Unauthenticated("this operation needs an API key: send 'authorization: Bearer <key>'")
        return self

    def is_user(self, handle: str) -> bool:
        """True when the caller is the user ``handle``."""
        return self.kind is PrincipalKind.USER and self.user_handle == handle


ADMIN = Principal(PrincipalKind.ADMIN)
ANONYMOUS = Principal(PrincipalKind.ANONYMOUS)

#: The principal of the RPC being served; set by the auth interceptor.
current_principal: ContextVar[Principal] = ContextVar("current_principal", default=ANONYMOUS)

#: For request-streaming RPCs: resolves the caller's key again (through the authorization cache), raising
#: UNAUTHENTICATED once it no longer works (rotated, user deleted). Set by the auth interceptor; a stream checks
#: it before each message, so withdrawn access stops an open stream at its next message.
current_reauthenticate: ContextVar[Callable[[], Awaitable[Principal]] | None] = ContextVar(
    "current_reauthenticate", default=None
)


def new_api_key() -> str:
    """A fresh user API key: 32 CSPRNG bytes as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def hash_api_key(key: str) -> str:
    """The stored form of a user key: SHA-256, 64 hex characters."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def admin_key_matches(presented: str, admin_key: str | None) -> bool:
    """Constant-time comparison; an empty or unset admin key never matches."""
    if not admin_key or not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), admin_key.encode("utf-8"))


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The key from ``authorization: Bearer <key>``; None when absent.

    Raises:
        Unauthenticated: the header is present but not a bearer token.
    """
    for name, value in metadata or ():
        if name.lower() != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <key>'")
        return token.strip()
    return None
