"""Rules shared by LLM service definitions and instances: owners, references, field values, shares, pages."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from vdb_grpc.auth import SYSTEM_USER, Principal
from vdb_grpc.errors import InvalidArgument, PermissionDenied
from vdb_grpc.limits import show
from vdb_grpc.pagination import PageRequest
from vdb_grpc.validation import check_handle, check_max_length

#: The mutable value fields of definitions and instances (instances add "api_key", definitions "is_public").
VALUE_FIELDS = ("endpoint", "description", "api_standard", "model", "dimensions", "context_limit")
ENDPOINT_MAX = 2000
DESCRIPTION_MAX = 1000
MODEL_MAX = 200
#: pgvector's halfvec holds at most 16000 dimensions.
MAX_DIMENSIONS = 16000
#: Handles read back from the database may be longer than new ones: the built-in definition
#: "cohere-multilingual-v3" has 22 characters (the definitions' handle column holds 40).
LOOKUP_HANDLE_RE = re.compile(r"[A-Za-z0-9.\-][A-Za-z0-9._\-]{2,39}")


def resolve_owner(principal: Principal, owner: str, field: str, *, allow_system: bool = False) -> str:
    """The owner a request addresses: ``owner``, or the calling user when it is empty.

    Raises:
        Unauthenticated: anonymous caller.
        InvalidArgument: the admin left ``owner`` empty, ``owner`` is not a valid handle, or it is ``_system``
            where ``allow_system`` is False.
    """
    principal.require_authenticated()
    if not owner:
        if principal.user_handle is None:
            raise InvalidArgument.field(field, "is required when the admin calls: name the owner")
        return principal.user_handle
    if owner == SYSTEM_USER:
        if not allow_system:
            raise InvalidArgument.field(field, f"{SYSTEM_USER!r} owns only the built-in definitions")
        return owner
    check_handle(owner, field)
    return owner


def require_owner_or_admin(principal: Principal, owner: str, action: str) -> None:
    """Only ``owner`` or the admin may ``action`` (checked before the resource is looked up)."""
    if not (principal.is_admin or principal.is_user(owner)):
        raise PermissionDenied(f"only the owner or the admin may {action}")


def check_lookup_handle(value: str, field: str) -> str:
    """A handle used to look a resource up (may be longer than a new handle: see ``LOOKUP_HANDLE_RE``)."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not LOOKUP_HANDLE_RE.fullmatch(value):
        raise InvalidArgument.field(field, f"{show(value)} is not a valid handle")
    return value


def parse_definition_reference(value: str, default_owner: str, field: str) -> tuple[str, str]:
    """Split ``owner/handle`` or a bare ``handle`` (a definition of ``default_owner``) into (owner, handle)."""
    if not value:
        raise InvalidArgument.field(field, "is required: write owner/definition_handle, e.g. _system/openai-small")
    owner, sep, handle = value.rpartition("/")
    if not sep:
        owner = default_owner
    elif owner != SYSTEM_USER:
        check_handle(owner, field)
    return owner, check_lookup_handle(handle, field)


def check_values(values: Any, fields: Collection[str], prefix: str) -> None:
    """Validate the named value fields of a definition or instance (``prefix`` names the request field).

    Raises:
        InvalidArgument: the first invalid field, named ``<prefix>.<field>``.
    """
    if "endpoint" in fields:
        endpoint = values.endpoint
        if not endpoint:
            raise InvalidArgument.field(f"{prefix}.endpoint", "is required")
        check_max_length(endpoint, ENDPOINT_MAX, f"{prefix}.endpoint")
        try:
            parts = urlsplit(endpoint)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok or endpoint != endpoint.strip():
            raise InvalidArgument.field(f"{prefix}.endpoint", "must be an http:// or https:// URL")
    if "description" in fields:
        check_max_length(values.description, DESCRIPTION_MAX, f"{prefix}.description")
    if "api_standard" in fields:
        check_handle(values.api_standard, f"{prefix}.api_standard")
    if "model" in fields:
        if not values.model.strip():
            raise InvalidArgument.field(f"{prefix}.model", "is required")
        check_max_length(values.model, MODEL_MAX, f"{prefix}.model")
    if "dimensions" in fields and not 1 <= values.dimensions <= MAX_DIMENSIONS:
        raise InvalidArgument.field(f"{prefix}.dimensions", f"must be between 1 and {MAX_DIMENSIONS}")
    if "context_limit" in fields and values.context_limit <= 0:
        raise InvalidArgument.field(f"{prefix}.context_limit", "must be positive")


def check_update_fields(fields: Collection[str], allowed: Collection[str]) -> None:
    """Refuse update-mask paths that are unknown, immutable or output only."""
    unknown = set(fields) - set(allowed)
    if unknown:
        raise InvalidArgument.field(
            "update_mask",
            f"unknown, immutable or output-only field(s): {', '.join(sorted(unknown))}; allowed: "
            + ", ".join(sorted(allowed)),
        )


def check_share_target(user_handle: str, owner: str, field: str = "share.user_handle") -> str:
    """A user a resource may be shared with: a valid handle that is not the owner (nor ``_system``)."""
    check_handle(user_handle, field)
    if user_handle == owner:
        raise InvalidArgument.field(field, f"{show(user_handle)} is the owner, who has every right already")
    return user_handle


def after_pair(page: PageRequest) -> tuple[str, str] | None:
    """The (owner, handle) sort key of a page token, or None for the first page."""
    if page.after is None:
        return None
    if len(page.after) != 2 or not all(isinstance(x, str) for x in page.after):
        raise InvalidArgument.field("page_token", "is not a token returned by this list")
    return str(page.after[0]), str(page.after[1])


def after_single(page: PageRequest) -> str | None:
    """The single string sort key of a page token, or None for the first page."""
    if page.after is None:
        return None
    if len(page.after) != 1 or not isinstance(page.after[0], str):
        raise InvalidArgument.field("page_token", "is not a token returned by this list")
    return page.after[0]
