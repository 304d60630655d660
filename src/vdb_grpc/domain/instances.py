"""LLM service instances: a user's concrete services, shared as reader or editor, with an encrypted API key.

The provider API key is encrypted here, before any SQL runs, with associated data ``owner/instance_handle``.
Owner and handle of an instance never change (no RPC renames or transfers an instance), so a stored key stays
bound to its row. Anything that ever changes them must re-encrypt the key in the same transaction.
No plaintext key is logged, put into an error message or returned.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from dataclasses import dataclass, replace

import asyncpg

from vdb_grpc.auth import Principal
from vdb_grpc.crypto import ApiKeyCipher
from vdb_grpc.domain.definitions import SharePage, read_definition
from vdb_grpc.domain.llm import (
    VALUE_FIELDS,
    after_pair,
    after_single,
    check_share_target,
    check_update_fields,
    check_values,
    parse_definition_reference,
    require_owner_or_admin,
    resolve_owner,
)
from vdb_grpc.domain.retry import creating, retry_conflicts, update_or_create
from vdb_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, PreconditionViolation
from vdb_grpc.pagination import next_token, page_request
from vdb_grpc.queries import instances as q
from vdb_grpc.queries import shares as share_q
from vdb_grpc.queries.instances import InstanceRow, InstanceValues
from vdb_grpc.queries.shares import INSTANCE_SHARES, ShareRow
from vdb_grpc.validation import check_handle, check_max_length, check_role

UPDATABLE_FIELDS = frozenset({*VALUE_FIELDS, "api_key"})
API_KEY_MAX = 4096
ADMIN_ROLE = "admin"
#: Roles that may change an instance besides the admin.
WRITER_ROLES = frozenset({"owner", "editor"})


@dataclass(frozen=True)
class InstancePage:
    """One page of ListInstances."""

    instances: list[InstanceRow]
    next_page_token: str


def _seen_by(principal: Principal, row: InstanceRow) -> InstanceRow:
    """``row`` with ``role`` set to the caller's role ("admin" for the admin)."""
    if principal.is_admin:
        return replace(row, role=ADMIN_ROLE)
    if principal.is_user(row.owner):
        return replace(row, role="owner")
    return row


def _visible(principal: Principal, owner: str, handle: str, row: InstanceRow | None) -> InstanceRow:
    """The instance as the caller sees it; PERMISSION_DENIED (whether or not it exists) for outsiders."""
    privileged = principal.is_admin or principal.is_user(owner)
    if row is None and privileged:
        raise NotFound.resource_missing("instance", f"{owner}/{handle}", owner)
    if row is None or (not privileged and row.role is None):
        raise PermissionDenied(f"instance {owner}/{handle} is not shared with you")
    return _seen_by(principal, row)


def _check_new(v: InstanceValues) -> None:
    check_handle(v.instance_handle, "instance.instance_handle")
    check_values(v, VALUE_FIELDS, "instance")


def _check_api_key(api_key: str) -> None:
    # The message never contains the key, only its length limit.
    check_max_length(api_key, API_KEY_MAX, "instance.api_key")


def _bound(message: str, projects: list[str]) -> FailedPrecondition:
    """The refusal to remove an instance, or someone's access to it, while projects are bound to it."""
    return FailedPrecondition(
        message,
        preconditions=[
            PreconditionViolation("INSTANCE_IN_USE", f"project:{p}", "is bound to the instance") for p in projects
        ],
    )


class Instances:
    """Use cases of LlmInstanceService."""

    def __init__(self, pool: asyncpg.Pool, cipher: ApiKeyCipher | None) -> None:
        """Args:
        pool: The database pool.
        cipher: Encrypts provider API keys; None when the server has no ENCRYPTION_KEY (requests carrying a
            key are then refused).
        """
        self._pool = pool
        self._cipher = cipher

    def _require_cipher(self) -> ApiKeyCipher:
        if self._cipher is None:
            raise FailedPrecondition(
                "this server has no ENCRYPTION_KEY configured, so it cannot store provider API keys: set "
                "ENCRYPTION_KEY (at least 32 characters) and restart the server, or send the request without api_key",
                preconditions=[
                    PreconditionViolation(
                        "ENCRYPTION_KEY_MISSING", "setting:ENCRYPTION_KEY", "needed to store provider API keys"
                    )
                ],
            )
        return self._cipher

    def _encrypt(self, api_key: str, owner: str, handle: str) -> bytes | None:
        """The stored form of ``api_key`` for ``owner/handle``; None for an empty key (= no key)."""
        if not api_key:
            return None
        return self._require_cipher().encrypt(api_key, owner=owner, instance_handle=handle)

    async def create(self, principal: Principal, v: InstanceValues, api_key: str) -> InstanceRow:
        """Create an instance from the values given; ``api_key`` (may be empty) is stored encrypted."""
        owner = resolve_owner(principal, v.owner, "instance.owner")
        require_owner_or_admin(principal, owner, "create instances for this user")
        v = replace(v, owner=owner)
        _check_new(v)
        _check_api_key(api_key)
        encrypted = self._encrypt(api_key, owner, v.instance_handle)
        async with self._pool.acquire() as conn:
            row = await q.insert_instance(conn, v, definition_id=None, encrypted_key=encrypted)
        return _seen_by(principal, row)

    async def create_from_definition(
        self, principal: Principal, reference: str, v: InstanceValues, api_key: str
    ) -> InstanceRow:
        """Create an instance from a readable definition; values left empty/0 in ``v`` come from it."""
        owner = resolve_owner(principal, v.owner, "instance.owner")
        require_owner_or_admin(principal, owner, "create instances for this user")
        def_owner, def_handle = parse_definition_reference(reference, owner, "definition")
        _check_api_key(api_key)
        if api_key:
            self._require_cipher()  # refuse before touching the database
        async with self._pool.acquire() as conn, conn.transaction():
            d = await read_definition(conn, principal, def_owner, def_handle)
            merged = InstanceValues(
                owner=owner,
                instance_handle=v.instance_handle or d.definition_handle,
                endpoint=v.endpoint or d.endpoint,
                description=v.description or d.description,
                api_standard=v.api_standard or d.api_standard,
                model=v.model or d.model,
                dimensions=v.dimensions or d.dimensions,
                context_limit=v.context_limit or d.context_limit,
            )
            if not v.instance_handle:
                try:
                    check_handle(merged.instance_handle, "instance.instance_handle")
                except InvalidArgument:
                    raise InvalidArgument.field(
                        "instance.instance_handle",
                        f"is required: the definition's handle {d.definition_handle!r} is not a valid instance "
                        "handle (3-20 characters)",
                    ) from None
            _check_new(merged)
            encrypted = self._encrypt(api_key, owner, merged.instance_handle)
            row = await q.insert_instance(conn, merged, definition_id=d.definition_id, encrypted_key=encrypted)
        return _seen_by(principal, row)

    async def get(self, principal: Principal, owner: str, handle: str) -> InstanceRow:
        """An instance the caller owns or has shared with them (admin: any)."""
        owner = resolve_owner(principal, owner, "owner")
        check_handle(handle, "instance_handle")
        async with self._pool.acquire() as conn:
            row = await q.get_instance(conn, owner, handle, principal.user_handle)
        return _visible(principal, owner, handle, row)

    async def list(self, principal: Principal, page_size: int, page_token: str) -> InstancePage:
        """Owned and shared-with-caller instances, each once, by (owner, handle) (admin: all)."""
        principal.require_authenticated()
        page = page_request("instances", page_size, page_token)
        async with self._pool.acquire() as conn:
            rows = await q.list_instances(conn, principal.user_handle, after_pair(page), page.size + 1)
        return InstancePage(
            [_seen_by(principal, r) for r in rows[: page.size]],
            next_token("instances", rows, page.size, lambda i: [i.owner, i.instance_handle]),
        )

    async def update(
        self,
        principal: Principal,
        v: InstanceValues,
        api_key: str,
        fields: Collection[str],
        *,
        allow_missing: bool,
        clear_api_key: bool,
    ) -> tuple[InstanceRow, bool]:
        """Change the named fields (owner, editor or admin). Returns (instance, created).

        The stored key changes only when ``api_key`` is named in ``fields`` (an empty value removes it) or
        ``clear_api_key`` is set. With ``allow_missing`` an absent instance is created (owner or admin).
        """
        owner = resolve_owner(principal, v.owner, "instance.owner")
        check_handle(v.instance_handle, "instance.instance_handle")
        check_update_fields(fields, UPDATABLE_FIELDS)
        check_values(v, fields, "instance")
        _check_api_key(api_key)
        sets_key = "api_key" in fields and bool(api_key)
        if clear_api_key and sets_key:
            raise InvalidArgument.field("clear_api_key", "cannot be combined with a new api_key")
        if sets_key:
            self._require_cipher()  # refuse before touching the database
        v = replace(v, owner=owner)
        return await update_or_create(
            lambda: self._update_once(
                principal, v, api_key, fields, allow_missing=allow_missing, clear_api_key=clear_api_key
            )
        )

    async def _update_once(
        self,
        principal: Principal,
        v: InstanceValues,
        api_key: str,
        fields: Collection[str],
        *,
        allow_missing: bool,
        clear_api_key: bool,
    ) -> tuple[InstanceRow, bool]:
        owner = v.owner
        sets_key = "api_key" in fields and bool(api_key)
        async with self._pool.acquire() as conn, conn.transaction():
            current = await q.get_instance(conn, owner, v.instance_handle, principal.user_handle, for_update=True)
            if current is None and allow_missing and (principal.is_admin or principal.is_user(owner)):
                _check_new(v)
                # Encrypts (or refuses for want of a key) before the INSERT; the transaction stores nothing else.
                encrypted = self._encrypt(api_key, owner, v.instance_handle)
                created = await creating(q.insert_instance(conn, v, definition_id=None, encrypted_key=encrypted))
                return _seen_by(principal, created), True
            row = _visible(principal, owner, v.instance_handle, current)
            if not (principal.is_admin or row.role in WRITER_ROLES):
                raise PermissionDenied(
                    f"only the owner, an editor or the admin may change instance {owner}/{v.instance_handle}"
                )
            if "dimensions" in fields and v.dimensions != row.dimensions:
                await self._check_dimensions_change(conn, row)
            merged = InstanceValues(
                owner=owner,
                instance_handle=row.instance_handle,
                **{f: getattr(v if f in fields else row, f) for f in VALUE_FIELDS},
            )
            change_key = clear_api_key or "api_key" in fields
            encrypted = self._encrypt(api_key, owner, row.instance_handle) if sets_key else None
            updated = await q.update_instance(
                conn, row.instance_id, merged, change_key=change_key, encrypted_key=encrypted
            )
            assert updated is not None  # locked above
        return replace(updated, role=row.role), False

    @staticmethod
    async def _check_dimensions_change(conn: asyncpg.Connection, row: InstanceRow) -> None:
        blockers = await q.projects_with_embeddings_using(conn, row.instance_id)
        if blockers:
            raise FailedPrecondition(
                f"cannot change the dimensions of instance {row.owner}/{row.instance_handle}: projects with "
                f"embeddings use it: {', '.join(blockers)}"
                + (" …" if len(blockers) >= 20 else "")
                + "; delete their embeddings or bind them to another instance first",
                preconditions=[
                    PreconditionViolation("DIMENSIONS_IN_USE", f"project:{b}", "has embeddings of the current size")
                    for b in blockers
                ],
            )

    async def delete(self, principal: Principal, owner: str, handle: str, *, force: bool = False) -> builtins.list[str]:
        """Delete an instance (owner or admin); return the projects ``force`` unbound.

        Raises:
            FailedPrecondition: projects are bound to it (named, up to 20) and ``force`` is not set.
        """
        owner = resolve_owner(principal, owner, "owner")
        require_owner_or_admin(principal, owner, "delete this instance")
        check_handle(handle, "instance_handle")
        name = f"{owner}/{handle}"

        async def attempt() -> builtins.list[str]:
            async with self._pool.acquire() as conn, conn.transaction():
                if force:  # the projects it unbinds first, then the instance: the order uploads lock them in
                    await self._lock_bound_projects(conn, owner, handle, None)
                row = await q.get_instance(conn, owner, handle, None, for_update=True)
                if row is None:
                    raise NotFound.resource_missing("instance", name, owner)
                detached: builtins.list[str] = []
                if force:
                    detached = await q.detach_projects(conn, row.instance_id, None)
                else:
                    blockers = await q.projects_using(conn, row.instance_id)
                    if blockers:
                        raise _bound(
                            f"instance {name} is used by project(s) {', '.join(blockers)}"
                            + (" …" if len(blockers) >= 20 else "")
                            + "; delete them or bind them to another instance first, or delete with force to unbind "
                            "them (they keep their embeddings)",
                            blockers,
                        )
                if not await q.delete_instance(conn, row.instance_id, name):  # pragma: no cover - locked above
                    raise NotFound.resource_missing("instance", name, owner)
            return detached

        return await retry_conflicts(attempt, f"delete instance {name}")

    async def share(self, principal: Principal, owner: str, handle: str, user_handle: str, role: str) -> ShareRow:
        """Share the instance with ``user_handle`` as reader or editor, or change the role (owner or admin)."""
        owner = resolve_owner(principal, owner, "owner")
        require_owner_or_admin(principal, owner, "share this instance")
        check_handle(handle, "instance_handle")
        check_role(role, "share.role")
        check_share_target(user_handle, owner)
        async with self._pool.acquire() as conn, conn.transaction():
            # Locked, so the only foreign key the share can violate is the user's.
            row = await q.get_instance(conn, owner, handle, None, for_update=True)
            if row is None:
                raise NotFound.resource_missing("instance", f"{owner}/{handle}", owner)
            return await share_q.upsert_share(conn, INSTANCE_SHARES, row.instance_id, user_handle, role)

    async def unshare(
        self, principal: Principal, owner: str, handle: str, user_handle: str, *, force: bool = False
    ) -> tuple[bool, builtins.list[str]]:
        """Withdraw ``user_handle``'s share (owner or admin). Returns (removed, projects ``force`` unbound).

        A withdrawn share must not stay in use: while projects of ``user_handle`` are bound to the instance the
        share is kept and FAILED_PRECONDITION names them, unless ``force`` unbinds them in the same transaction
        (they keep their embeddings and show ``instance_missing``). The instance row is locked FOR UPDATE, so a
        concurrent binding (which locks it FOR SHARE) either commits first and is unbound here, or waits.
        """
        owner = resolve_owner(principal, owner, "owner")
        require_owner_or_admin(principal, owner, "unshare this instance")
        check_handle(handle, "instance_handle")
        check_handle(user_handle, "user_handle")
        name = f"{owner}/{handle}"

        async def attempt() -> tuple[bool, builtins.list[str]]:
            async with self._pool.acquire() as conn, conn.transaction():
                if force and user_handle != owner:  # the projects it unbinds first, then the instance (see delete)
                    await self._lock_bound_projects(conn, owner, handle, user_handle)
                row = await q.get_instance(conn, owner, handle, None, for_update=True)
                if row is None:
                    raise NotFound.resource_missing("instance", name, owner)
                detached: builtins.list[str] = []
                if user_handle != owner:
                    if force:
                        detached = await q.detach_projects(conn, row.instance_id, user_handle)
                    else:
                        blockers = await q.projects_of_user_using(conn, row.instance_id, user_handle)
                        if blockers:
                            raise _bound(
                                f"{user_handle}'s project(s) {', '.join(blockers)}"
                                + (" …" if len(blockers) >= 20 else "")
                                + f" are bound to instance {name}; unshare with force to unbind them (they keep their "
                                "embeddings and can be bound to another instance)",
                                blockers,
                            )
                removed = await share_q.delete_share(conn, INSTANCE_SHARES, row.instance_id, user_handle)
            return removed, detached

        return await retry_conflicts(attempt, f"unshare instance {name}")

    @staticmethod
    async def _lock_bound_projects(
        conn: asyncpg.Connection, owner: str, handle: str, project_owner: str | None
    ) -> None:
        """Lock the projects (of ``project_owner``, or all) bound to instance owner/handle, if it exists.

        Uploads lock their project and then its instance; taking the projects before the instance row here
        keeps one order, so an unbinding change and an upload wait for each other instead of deadlocking
        (PostgreSQL would abort one after deadlock_timeout, and retries could run out under load).
        """
        found = await q.get_instance(conn, owner, handle, None)
        if found is not None:
            await q.lock_bound_projects(conn, found.instance_id, project_owner)

    async def list_shares(
        self, principal: Principal, owner: str, handle: str, page_size: int, page_token: str
    ) -> SharePage:
        """The users the instance is shared with and their roles (owner or admin), by user handle."""
        owner = resolve_owner(principal, owner, "owner")
        require_owner_or_admin(principal, owner, "list the shares of this instance")
        check_handle(handle, "instance_handle")
        page = page_request("instance_shares", page_size, page_token)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            row = await q.get_instance(conn, owner, handle, None)
            if row is None:
                raise NotFound.resource_missing("instance", f"{owner}/{handle}", owner)
            rows = await share_q.list_shares(conn, INSTANCE_SHARES, row.instance_id, after_single(page), page.size + 1)
        return SharePage(rows[: page.size], next_token("instance_shares", rows, page.size, lambda s: [s.user_handle]))
