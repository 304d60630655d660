"""LLM service definitions: templates for instances, readable by owner, sharees and — when public or built-in —
by every authenticated user; written by their owner, and ``_system``'s only by the admin."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

import asyncpg

from vdb_grpc.auth import SYSTEM_USER, Principal
from vdb_grpc.domain.llm import (
    VALUE_FIELDS,
    after_pair,
    after_single,
    check_lookup_handle,
    check_share_target,
    check_update_fields,
    check_values,
    resolve_owner,
)
from vdb_grpc.domain.retry import creating, update_or_create
from vdb_grpc.errors import InvalidArgument, NotFound, PermissionDenied
from vdb_grpc.pagination import next_token, page_request
from vdb_grpc.queries import definitions as q
from vdb_grpc.queries import shares as share_q
from vdb_grpc.queries.definitions import DefinitionRow, DefinitionValues
from vdb_grpc.queries.shares import DEFINITION_SHARES, ShareRow
from vdb_grpc.validation import check_handle

UPDATABLE_FIELDS = frozenset({*VALUE_FIELDS, "is_public"})
ALL_FIELDS = UPDATABLE_FIELDS
#: Definitions are shared read-only.
SHARE_ROLE = "reader"


@dataclass(frozen=True)
class DefinitionPage:
    """One page of ListDefinitions."""

    definitions: list[DefinitionRow]
    next_page_token: str


@dataclass(frozen=True)
class SharePage:
    """One page of a ListShares RPC."""

    shares: list[ShareRow]
    next_page_token: str


def require_definition_writer(principal: Principal, owner: str, action: str) -> None:
    """The owner or the admin; ``_system``'s definitions only the admin (checked before existence)."""
    if principal.is_admin:
        return
    if owner == SYSTEM_USER:
        raise PermissionDenied(f"only the admin may {action} the built-in definitions of {SYSTEM_USER!r}")
    if not principal.is_user(owner):
        raise PermissionDenied(f"only the owner or the admin may {action} this definition")


def _could_know_of(principal: Principal, owner: str) -> bool:
    """Whether the caller may learn that a definition of ``owner`` does not exist."""
    return principal.is_admin or principal.is_user(owner) or owner == SYSTEM_USER


def check_readable(principal: Principal, owner: str, handle: str, row: DefinitionRow | None) -> DefinitionRow:
    """``row`` if the caller may read it; NOT_FOUND if absent and the caller could have read it; else DENIED."""
    if row is not None and (_could_know_of(principal, owner) or row.is_public or row.shared_role is not None):
        return row
    if row is None and _could_know_of(principal, owner):
        raise NotFound.resource_missing("definition", f"{owner}/{handle}", owner)
    raise PermissionDenied(f"definition {owner}/{handle} is not shared with you")


async def read_definition(conn: asyncpg.Connection, principal: Principal, owner: str, handle: str) -> DefinitionRow:
    """The definition ``owner/handle`` if the caller may read it (on the caller's connection/transaction).

    Raises:
        PermissionDenied: the caller may not read it (whether or not it exists).
        NotFound: it does not exist, and the caller would have been allowed to read it.
    """
    row = await q.get_definition(conn, owner, handle, principal.user_handle)
    return check_readable(principal, owner, handle, row)


def _check_new(v: DefinitionValues) -> None:
    check_handle(v.definition_handle, "definition.definition_handle")
    check_values(v, ALL_FIELDS, "definition")


class Definitions:
    """Use cases of LlmDefinitionService."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, principal: Principal, v: DefinitionValues) -> DefinitionRow:
        """Create a definition for ``v.owner`` (empty = the caller)."""
        owner = resolve_owner(principal, v.owner, "definition.owner", allow_system=True)
        require_definition_writer(principal, owner, "create")
        v = replace(v, owner=owner)
        _check_new(v)
        async with self._pool.acquire() as conn:
            return await q.insert_definition(conn, v)

    async def get(self, principal: Principal, owner: str, handle: str) -> DefinitionRow:
        """A definition the caller may read."""
        owner = resolve_owner(principal, owner, "owner", allow_system=True)
        check_lookup_handle(handle, "definition_handle")
        async with self._pool.acquire() as conn:
            return await read_definition(conn, principal, owner, handle)

    async def list(self, principal: Principal, page_size: int, page_token: str) -> DefinitionPage:
        """The definitions the caller can use, each once, by (owner, handle)."""
        principal.require_authenticated()
        page = page_request("definitions", page_size, page_token)
        async with self._pool.acquire() as conn:
            rows = await q.list_definitions(conn, principal.user_handle, after_pair(page), page.size + 1)
        return DefinitionPage(
            rows[: page.size],
            next_token("definitions", rows, page.size, lambda d: [d.owner, d.definition_handle]),
        )

    async def update(
        self, principal: Principal, v: DefinitionValues, fields: Collection[str], *, allow_missing: bool
    ) -> tuple[DefinitionRow, bool]:
        """Change the named fields (owner or admin); allow_missing creates. Returns (definition, created)."""
        owner = resolve_owner(principal, v.owner, "definition.owner", allow_system=True)
        require_definition_writer(principal, owner, "change")
        check_lookup_handle(v.definition_handle, "definition.definition_handle")
        check_update_fields(fields, UPDATABLE_FIELDS)
        check_values(v, fields, "definition")
        v = replace(v, owner=owner)
        return await update_or_create(lambda: self._update_once(v, fields, allow_missing=allow_missing))

    async def _update_once(
        self, v: DefinitionValues, fields: Collection[str], *, allow_missing: bool
    ) -> tuple[DefinitionRow, bool]:
        owner = v.owner
        async with self._pool.acquire() as conn, conn.transaction():
            current = await q.get_definition(conn, owner, v.definition_handle, None, for_update=True)
            if current is None:
                if not allow_missing:
                    raise NotFound.resource_missing("definition", f"{owner}/{v.definition_handle}", owner)
                _check_new(v)
                return await creating(q.insert_definition(conn, v)), True
            merged = DefinitionValues(
                owner=owner,
                definition_handle=current.definition_handle,
                **{f: getattr(v if f in fields else current, f) for f in ALL_FIELDS},
            )
            row = await q.update_definition(conn, current.definition_id, merged)
            assert row is not None  # locked above
            return row, False

    async def delete(self, principal: Principal, owner: str, handle: str) -> None:
        """Delete a definition (owner or admin); instances made from it keep their values."""
        owner = resolve_owner(principal, owner, "owner", allow_system=True)
        require_definition_writer(principal, owner, "delete")
        check_lookup_handle(handle, "definition_handle")
        async with self._pool.acquire() as conn, conn.transaction():
            current = await q.get_definition(conn, owner, handle, None, for_update=True)
            if current is None or not await q.delete_definition(conn, current.definition_id):
                raise NotFound.resource_missing("definition", f"{owner}/{handle}", owner)

    async def share(self, principal: Principal, owner: str, handle: str, user_handle: str, role: str) -> ShareRow:
        """Let ``user_handle`` read the definition (owner or admin). ``role`` must be "reader" or empty."""
        owner = resolve_owner(principal, owner, "owner", allow_system=True)
        require_definition_writer(principal, owner, "share")
        check_lookup_handle(handle, "definition_handle")
        if role not in ("", SHARE_ROLE):
            raise InvalidArgument.field("share.role", "definitions are shared read-only: use 'reader'")
        check_share_target(user_handle, owner)
        async with self._pool.acquire() as conn, conn.transaction():
            # Locked, so the only foreign key the share can violate is the user's.
            current = await q.get_definition(conn, owner, handle, None, for_update=True)
            if current is None:
                raise NotFound.resource_missing("definition", f"{owner}/{handle}", owner)
            return await share_q.upsert_share(conn, DEFINITION_SHARES, current.definition_id, user_handle, SHARE_ROLE)

    async def unshare(self, principal: Principal, owner: str, handle: str, user_handle: str) -> bool:
        """Withdraw ``user_handle``'s share (owner or admin); False when there was none."""
        owner = resolve_owner(principal, owner, "owner", allow_system=True)
        require_definition_writer(principal, owner, "unshare")
        check_lookup_handle(handle, "definition_handle")
        check_handle(user_handle, "user_handle")
        async with self._pool.acquire() as conn, conn.transaction():
            current = await q.get_definition(conn, owner, handle, None)
            if current is None:
                raise NotFound.resource_missing("definition", f"{owner}/{handle}", owner)
            return await share_q.delete_share(conn, DEFINITION_SHARES, current.definition_id, user_handle)

    async def list_shares(
        self, principal: Principal, owner: str, handle: str, page_size: int, page_token: str
    ) -> SharePage:
        """The users the definition is shared with (owner or admin), by user handle."""
        owner = resolve_owner(principal, owner, "owner", allow_system=True)
        require_definition_writer(principal, owner, "list the shares of")
        check_lookup_handle(handle, "definition_handle")
        page = page_request("definition_shares", page_size, page_token)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            current = await q.get_definition(conn, owner, handle, None)
            if current is None:
                raise NotFound.resource_missing("definition", f"{owner}/{handle}", owner)
            rows = await share_q.list_shares(
                conn, DEFINITION_SHARES, current.definition_id, after_single(page), page.size + 1
            )
        return SharePage(rows[: page.size], next_token("definition_shares", rows, page.size, lambda s: [s.user_handle]))
