"""Input rules shared by every resource: handles, references, emails, names, page sizes."""

from __future__ import annotations

import re

from vdb_grpc.errors import InvalidArgument
from vdb_grpc.limits import show

HANDLE_RE = re.compile(r"[A-Za-z0-9.\-][A-Za-z0-9._\-]{2,19}")
#: Handles nobody may register (besides anything starting with "_").
RESERVED_HANDLES = frozenset({"admin", "public", "_system"})
SHARE_ROLES = ("reader", "editor")


def check_handle(value: str, field: str) -> str:
    """Return ``value`` if it is a valid handle, else raise INVALID_ARGUMENT naming ``field``."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not HANDLE_RE.fullmatch(value):
        raise InvalidArgument.field(
            field,
            f"{show(value)} is not a valid handle: 3-20 characters from A-Z a-z 0-9 . _ -, not starting with '_'",
        )
    return value


def check_new_user_handle(value: str, field: str = "user.user_handle") -> str:
    """A handle a new user may take: valid and not reserved."""
    if value.startswith("_") or value.lower() in RESERVED_HANDLES or value == "*":
        raise InvalidArgument.field(field, f"{show(value)} is reserved")
    return check_handle(value, field)


def parse_reference(value: str, caller: str | None, field: str) -> tuple[str, str]:
    """Split ``owner/handle`` or a bare ``handle`` (the caller's own) into (owner, handle)."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    owner, sep, handle = value.rpartition("/")
    if not sep:
        if caller is None:
            raise InvalidArgument.field(field, "must be written owner/handle")
        owner, handle = caller, value
    if owner != "_system":
        check_handle(owner, field)
    check_handle(handle, field)
    return owner, handle


def check_email(value: str, field: str = "user.email") -> str:
    """5-100 characters with exactly one '@' and something on both sides."""
    local, at, domain = value.partition("@")
    if not (5 <= len(value) <= 100) or not at or "@" in domain or not local or not domain or value != value.strip():
        raise InvalidArgument.field(field, "must be 5-100 characters with exactly one '@'")
    return value


def check_max_length(value: str, limit: int, field: str) -> str:
    """Raise INVALID_ARGUMENT when ``value`` has more than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument.field(field, f"must be at most {limit} characters")
    return value


def check_role(value: str, field: str = "role") -> str:
    """A share role: "reader" or "editor"."""
    if value not in SHARE_ROLES:
        raise InvalidArgument.field(field, f"must be 'reader' or 'editor', got {show(value)}")
    return value
