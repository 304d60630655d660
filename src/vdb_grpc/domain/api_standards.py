"""API standards: public reads, admin writes, no deletion while in use."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

import asyncpg

from vdb_grpc.auth import Principal
from vdb_grpc.domain.access import require_admin
from vdb_grpc.domain.retry import creating, update_or_create
from vdb_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, PreconditionViolation
from vdb_grpc.pagination import next_token, page_request
from vdb_grpc.queries import api_standards as q
from vdb_grpc.queries.api_standards import ApiStandardRow
from vdb_grpc.validation import check_handle, check_max_length

KEY_METHODS = ("auth_bearer", "body_form", "query_param", "custom_header")
UPDATABLE_FIELDS = frozenset({"description", "key_method", "key_field", "request_shape", "key_optional", "max_inputs"})
#: Request shapes the service can call (``vdb_grpc.providers``); "" = none.
REQUEST_SHAPES = ("openai", "cohere", "gemini", "ollama")
#: Upper bound of ``max_inputs`` (a request of more texts would exceed any provider's limit).
MAX_INPUTS_LIMIT = 10_000


@dataclass(frozen=True)
class ApiStandardPage:
    """One page of ListApiStandards."""

    api_standards: list[ApiStandardRow]
    next_page_token: str


def _validate(s: ApiStandardRow, fields: Collection[str] = UPDATABLE_FIELDS) -> None:
    check_handle(s.api_standard_handle, "api_standard.api_standard_handle")
    if "key_method" in fields and s.key_method not in KEY_METHODS:
        raise InvalidArgument.field("api_standard.key_method", f"must be one of {', '.join(KEY_METHODS)}")
    if "key_field" in fields:
        check_max_length(s.key_field, 20, "api_standard.key_field")
    if "request_shape" in fields and s.request_shape and s.request_shape not in REQUEST_SHAPES:
        raise InvalidArgument.field(
            "api_standard.request_shape", f"must be empty or one of {', '.join(REQUEST_SHAPES)}"
        )
    if "max_inputs" in fields and not 0 <= s.max_inputs <= MAX_INPUTS_LIMIT:
        raise InvalidArgument.field("api_standard.max_inputs", f"must be between 0 and {MAX_INPUTS_LIMIT}")


class ApiStandards:
    """Use cases of ApiStandardService."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, principal: Principal, s: ApiStandardRow) -> ApiStandardRow:
        """Create a standard (admin)."""
        require_admin(principal, "create API standards")
        _validate(s)
        async with self._pool.acquire() as conn:
            return await q.insert_api_standard(conn, s)

    async def get(self, handle: str) -> ApiStandardRow:
        """Read a standard (anyone)."""
        check_handle(handle, "api_standard_handle")
        async with self._pool.acquire() as conn:
            row = await q.get_api_standard(conn, handle)
        if row is None:
            raise NotFound.resource_missing("API standard", handle)
        return row

    async def list(self, page_size: int, page_token: str) -> ApiStandardPage:
        """All standards by handle (anyone)."""
        page = page_request("api_standards", page_size, page_token)
        after = str(page.after[0]) if page.after else None
        async with self._pool.acquire() as conn:
            rows = await q.list_api_standards(conn, after, page.size + 1)
        return ApiStandardPage(
            rows[: page.size], next_token("api_standards", rows, page.size, lambda s: [s.api_standard_handle])
        )

    async def update(
        self, principal: Principal, s: ApiStandardRow, fields: Collection[str], *, allow_missing: bool
    ) -> tuple[ApiStandardRow, bool]:
        """Change the named fields (admin); allow_missing creates. Returns (standard, created)."""
        require_admin(principal, "change API standards")
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidArgument.field(
                "update_mask",
                f"unknown or immutable field(s): {', '.join(sorted(unknown))}; allowed: "
                + ", ".join(sorted(UPDATABLE_FIELDS)),
            )
        _validate(s, fields)
        return await update_or_create(lambda: self._update_once(s, fields, allow_missing=allow_missing))

    async def _update_once(
        self, s: ApiStandardRow, fields: Collection[str], *, allow_missing: bool
    ) -> tuple[ApiStandardRow, bool]:
        async with self._pool.acquire() as conn, conn.transaction():
            current = await q.get_api_standard(conn, s.api_standard_handle, for_update=True)
            if current is None:
                if not allow_missing:
                    raise NotFound.resource_missing("API standard", s.api_standard_handle)
                _validate(s)
                return await creating(q.insert_api_standard(conn, s)), True
            merged = replace(current, **{f: getattr(s, f) for f in fields})
            row = await q.update_api_standard(conn, merged)
            assert row is not None
            return row, False

    async def delete(self, principal: Principal, handle: str) -> None:
        """Delete a standard (admin); FAILED_PRECONDITION while definitions or instances use it."""
        require_admin(principal, "delete API standards")
        check_handle(handle, "api_standard_handle")
        async with self._pool.acquire() as conn, conn.transaction():
            users = await q.api_standard_users(conn, handle)
            if users:
                raise FailedPrecondition(
                    f"API standard {handle!r} is used by " + ", ".join(f"{k} {n}" for k, n in users),
                    preconditions=[
                        PreconditionViolation("IN_USE", f"{k}:{n}", "uses this API standard") for k, n in users
                    ],
                )
            try:
                deleted = await q.delete_api_standard(conn, handle)
            except asyncpg.ForeignKeyViolationError:  # raced with a new user of the standard
                raise FailedPrecondition(f"API standard {handle!r} is in use") from None
        if not deleted:
            raise NotFound.resource_missing("API standard", handle)
