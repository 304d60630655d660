"""Users: creation with a one-time key, memberships, updates, cascading deletes, key rotation."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from dataclasses import dataclass, field

import asyncpg

from vdb_grpc.auth import SYSTEM_USER, Principal, PrincipalKind, hash_api_key, new_api_key
from vdb_grpc.cache import CoherentCache
from vdb_grpc.domain.access import require_admin, require_self_or_admin
from vdb_grpc.domain.retry import creating, retry_conflicts, update_or_create
from vdb_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, PreconditionViolation
from vdb_grpc.limits import show
from vdb_grpc.pagination import next_token, page_request
from vdb_grpc.queries import users as q
from vdb_grpc.queries.users import MembershipRow, UserRow
from vdb_grpc.validation import check_email, check_handle, check_max_length, check_new_user_handle

UPDATABLE_FIELDS = frozenset({"name", "email"})
NAME_MAX = 50


@dataclass(frozen=True)
class NewUser:
    """Input of CreateUser."""

    user_handle: str
    name: str
    email: str


@dataclass(frozen=True)
class UserDetails:
    """A user with what they own or have shared with them."""

    user: UserRow
    projects: list[MembershipRow] = field(default_factory=list)
    instances: list[MembershipRow] = field(default_factory=list)
    definitions: list[MembershipRow] = field(default_factory=list)


@dataclass(frozen=True)
class UserPage:
    """One page of ListUsers."""

    users: list[UserRow]
    next_page_token: str


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of UpdateUser; ``api_key`` only when ``allow_missing`` created the user."""

    user: UserRow
    created: bool = False
    api_key: str = ""


def _validate_new(user: NewUser) -> None:
    check_new_user_handle(user.user_handle)
    check_email(user.email)
    check_max_length(user.name, NAME_MAX, "user.name")


def _not_builtin(handle: str) -> None:
    if handle.startswith("_"):
        raise FailedPrecondition(f"{show(handle)} is a built-in user and cannot be changed")


class Users:
    """Use cases of UserService."""

    def __init__(self, pool: asyncpg.Pool, key_cache: CoherentCache[str, Principal] | None = None) -> None:
        """Args:
        pool: database pool.
        key_cache: recently resolved keys (by hash); None: every request asks the database.
        """
        self._pool = pool
        self._key_cache = key_cache

    async def authenticate(self, key: str) -> Principal | None:
        """The user whose key this is, or None. Keys are looked up by hash; ``_system`` never matches."""
        key_hash = hash_api_key(key)

        async def lookup() -> Principal | None:
            async with self._pool.acquire() as conn:
                handle = await q.user_handle_by_key_hash(conn, key_hash)
            return Principal(PrincipalKind.USER, handle) if handle else None

        if self._key_cache is None:
            return await lookup()
        return await self._key_cache.get_or_load(key_hash, lookup)

    async def create(self, principal: Principal, user: NewUser) -> tuple[UserRow, str]:
        """Create a user; return it and its API key (the only time the key exists outside the caller)."""
        require_admin(principal, "create users")
        _validate_new(user)
        key = new_api_key()
        async with self._pool.acquire() as conn:
            row = await q.insert_user(conn, user.user_handle, user.name, user.email, hash_api_key(key))
        return row, key

    async def get(self, principal: Principal, handle: str) -> UserDetails:
        """A user with memberships (self or admin)."""
        require_self_or_admin(principal, handle, "read this user")
        check_handle(handle, "user_handle") if handle != SYSTEM_USER else None
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            row = await q.get_user(conn, handle)
            if row is None:
                raise NotFound.resource_missing("user", handle)
            groups = await q.memberships(conn, handle)
        return UserDetails(
            user=row, projects=groups["project"], instances=groups["instance"], definitions=groups["definition"]
        )

    async def list(self, principal: Principal, page_size: int, page_token: str) -> UserPage:
        """All users ordered by handle (admin)."""
        require_admin(principal, "list users")
        page = page_request("users", page_size, page_token)
        after = str(page.after[0]) if page.after else None
        async with self._pool.acquire() as conn:
            rows = await q.list_users(conn, after, page.size + 1)
        return UserPage(rows[: page.size], next_token("users", rows, page.size, lambda u: [u.user_handle]))

    async def update(
        self, principal: Principal, user: NewUser, fields: Collection[str], *, allow_missing: bool
    ) -> UpdateResult:
        """Change the named fields (name, email); with allow_missing, create an absent user (admin)."""
        require_self_or_admin(principal, user.user_handle, "update this user")
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidArgument.field(
                "update_mask", f"unknown or immutable field(s): {', '.join(sorted(unknown))}; allowed: name, email"
            )
        if "email" in fields:
            check_email(user.email)
        if "name" in fields:
            check_max_length(user.name, NAME_MAX, "user.name")
        _not_builtin(user.user_handle)
        return await update_or_create(lambda: self._update_once(principal, user, fields, allow_missing=allow_missing))

    async def _update_once(
        self, principal: Principal, user: NewUser, fields: Collection[str], *, allow_missing: bool
    ) -> UpdateResult:
        async with self._pool.acquire() as conn, conn.transaction():
            current = await q.get_user(conn, user.user_handle, for_update=True)
            if current is None:
                if not allow_missing:
                    raise NotFound.resource_missing("user", user.user_handle)
                require_admin(principal, "create users")
                _validate_new(user)
                key = new_api_key()
                row = await creating(q.insert_user(conn, user.user_handle, user.name, user.email, hash_api_key(key)))
                return UpdateResult(user=row, created=True, api_key=key)
            name = user.name if "name" in fields else current.name
            email = user.email if "email" in fields else current.email
            updated = await q.update_user(conn, user.user_handle, name, email)
            if updated is None:  # pragma: no cover - row is locked above
                raise NotFound.resource_missing("user", user.user_handle)
        return UpdateResult(user=updated)

    async def delete(self, principal: Principal, handle: str, *, force: bool) -> builtins.list[str]:
        """Delete a user and all they own; return the other users' projects that lost their instance."""
        require_self_or_admin(principal, handle, "delete this user")
        _not_builtin(handle)
        check_handle(handle, "user_handle")

        async def attempt() -> builtins.list[str]:
            async with self._pool.acquire() as conn, conn.transaction():
                if await q.get_user(conn, handle, for_update=True) is None:
                    raise NotFound.resource_missing("user", handle)
                blockers = [f"{o}/{p}" for o, p in await q.dependent_projects(conn, handle)]
                if blockers and not force:
                    raise FailedPrecondition(
                        f"user {handle!r} owns instances used by other users' projects: {', '.join(blockers[:20])}"
                        + (" …" if len(blockers) > 20 else "")
                        + "; delete with force to detach them",
                        preconditions=[
                            PreconditionViolation(
                                "INSTANCE_IN_USE", f"project:{b}", "project is bound to an instance of the user"
                            )
                            for b in blockers
                        ],
                    )
                if blockers:
                    await q.detach_dependent_projects(conn, handle)
                await q.delete_user(conn, handle)
            return blockers

        return await retry_conflicts(attempt, f"delete user {handle}")

    async def rotate_key(self, principal: Principal, handle: str) -> str:
        """Replace the user's key; the old one stops working with this transaction's commit."""
        require_self_or_admin(principal, handle, "rotate this user's key")
        _not_builtin(handle)
        check_handle(handle, "user_handle")
        key = new_api_key()
        async with self._pool.acquire() as conn:
            if not await q.set_key_hash(conn, handle, hash_api_key(key)):
                raise NotFound.resource_missing("user", handle)
        return key
