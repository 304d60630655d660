"""Projects: binding to an LLM service instance, metadata schemas, sharing, public read, transfer.

Who may do what with a project (``resolve_project_access`` is the one place that decides it):

====================  =====  =====  ======  ======  =========================
need                  admin  owner  editor  reader  anyone, if ``public_read``
====================  =====  =====  ======  ======  =========================
``read``              ✔      ✔      ✔       ✔       ✔ (no key needed)
``write`` embeddings  ✔      ✔      ✔       –       –
``manage`` project    ✔      ✔      –       –       –
====================  =====  =====  ======  ======  =========================

Permission is checked before existence: a caller who could not see the project gets PERMISSION_DENIED
(UNAUTHENTICATED without a key) whether or not it exists. Only callers who would see it if it existed — the
admin, and the user named as its owner — are told NOT_FOUND.

A project is bound to one instance, which its owner must own or have shared with them (any role). When the
instance's owner is deleted with ``force`` (or the instance is deleted, or unshared from the project's owner,
with ``force``), the projects bound to it keep their embeddings but lose the binding: they report
``instance_missing`` and refuse uploads and searches (``NO_INSTANCE_MESSAGE``) until UpdateProject binds them
to an instance again. A binding to an instance the owner may no longer use (``ProjectAccess.instance_usable``)
is refused the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from vdb_grpc.auth import Principal
from vdb_grpc.domain.retry import creating, update_or_create
from vdb_grpc.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    ResourceRef,
    Unauthenticated,
)
from vdb_grpc.limits import Limits
from vdb_grpc.metadata_schema import MetadataSchema, compile_schema
from vdb_grpc.pagination import MAX_PAGE_SIZE, next_token, page_request
from vdb_grpc.queries import projects as q
from vdb_grpc.queries import shares as share_q
from vdb_grpc.queries.projects import InstanceRef, ProjectRow, RowLock
from vdb_grpc.queries.shares import PROJECT_SHARES, ShareRow
from vdb_grpc.validation import check_handle, check_max_length, check_role, parse_reference

Need = Literal["read", "write", "manage"]
ProjectRole = Literal["admin", "owner", "editor", "reader", "public"]

DESCRIPTION_MAX = 255
UPDATABLE_FIELDS = frozenset({"description", "metadata_schema", "instance", "public_read"})
#: GetProject lists at most this many shares (ListProjectShares pages through all of them).
SHARES_IN_GET = MAX_PAGE_SIZE
#: How many violating embeddings a refused metadata_schema change names.
VIOLATION_SAMPLE = 10
#: The error uploads and searches give for a project whose instance was removed.
NO_INSTANCE_MESSAGE = "project has no instance; rebind it with UpdateProject"

_ALLOWED: dict[Need, frozenset[str]] = {
    "read": frozenset({"admin", "owner", "editor", "reader", "public"}),
    "write": frozenset({"admin", "owner", "editor"}),
    "manage": frozenset({"admin", "owner"}),
}
_VERB: dict[Need, str] = {"read": "read", "write": "change the embeddings of", "manage": "manage"}


@dataclass(frozen=True)
class ProjectAccess:
    """A project the caller may use for the requested need, and everything embedding operations need of it.

    Attributes:
        project_id: Surrogate key (for queries on embeddings).
        owner: Owner handle.
        project_handle: Project handle.
        role: The caller's role: "admin", "owner", "editor", "reader" or "public" (not shared, but public_read).
        instance_id: The bound instance, None when it was removed (see ``require_instance``).
        instance: The bound instance as "owner/handle", None with instance_id.
        dimensions: Vector size of the bound instance, None with instance_id.
        metadata_schema: JSON Schema text embeddings' metadata must satisfy, None when there is none
            (compile it with ``vdb_grpc.metadata_schema.compile_stored_schema``).
        public_read: Anyone may read the project.
        description: Free text.
        instance_usable: The owner may still use the bound instance (see ``require_instance``).
    """

    project_id: int
    owner: str
    project_handle: str
    role: ProjectRole
    instance_id: int | None
    instance: str | None
    dimensions: int | None
    metadata_schema: str | None
    public_read: bool
    description: str
    instance_usable: bool = True

    @property
    def name(self) -> str:
        """``owner/project_handle``."""
        return f"{self.owner}/{self.project_handle}"

    def require_instance(self) -> tuple[int, int]:
        """``(instance_id, dimensions)`` of the bound instance.

        Raises:
            FailedPrecondition: the project has no instance (its instance's owner was deleted with force, or the
                instance deleted or unshared with force), or its owner may no longer use the instance.
        """
        if self.instance_id is not None and not self.instance_usable:
            raise FailedPrecondition(
                f"the owner of project {self.name!r} may no longer use instance {self.instance!r} (it is not shared "
                "with them any more); rebind the project with UpdateProject",
                preconditions=[
                    PreconditionViolation(
                        "INSTANCE_NOT_USABLE", f"instance:{self.instance}", f"not owned by or shared with {self.owner}"
                    )
                ],
            )
        if self.instance_id is None or self.dimensions is None:
            raise FailedPrecondition(
                NO_INSTANCE_MESSAGE,
                preconditions=[
                    PreconditionViolation("NO_INSTANCE", f"project:{self.name}", "the project is bound to no instance")
                ],
            )
        return self.instance_id, self.dimensions


@dataclass(frozen=True)
class ProjectInput:
    """A project as a Create/Update request gives it. Empty strings mean "not given"."""

    owner: str
    project_handle: str
    description: str = ""
    metadata_schema: str = ""
    instance: str = ""
    public_read: bool = False


@dataclass(frozen=True)
class ProjectView:
    """A project as the API shows it to one caller.

    Attributes:
        instance: "owner/handle" of the bound instance; "" when ``instance_missing``.
        instance_missing: The project lost its instance (deleted with its owner) and must be rebound.
        role: The caller's role (see ``ProjectAccess.role``); in ListProjects for a user named by the admin,
            that user's role; "" when the caller has no access any more (after giving the project away).
        number_of_embeddings: None where not counted (lists).
        shares: Only for the owner and the admin (at most ``SHARES_IN_GET``).
    """

    owner: str
    project_handle: str
    description: str
    metadata_schema: str
    instance: str
    instance_missing: bool
    public_read: bool
    role: str
    number_of_embeddings: int | None = None
    shares: list[ShareRow] = field(default_factory=list)


@dataclass(frozen=True)
class ProjectPage:
    """One page of ListProjects."""

    projects: list[ProjectView]
    next_page_token: str


@dataclass(frozen=True)
class SharePage:
    """One page of ListProjectShares."""

    shares: list[ShareRow]
    next_page_token: str


def _instance_name(row: ProjectRow) -> str | None:
    if row.instance_id is None:
        return None
    return f"{row.instance_owner}/{row.instance_handle}"


def _role_of(principal: Principal, row: ProjectRow) -> ProjectRole | None:
    """The caller's role on an existing project, None when they have none."""
    if principal.is_admin:
        return "admin"
    if principal.is_user(row.owner):
        return "owner"
    if principal.user_handle is not None and row.share_role in ("editor", "reader"):
        return "editor" if row.share_role == "editor" else "reader"
    if row.public_read:
        return "public"
    return None


def _owner_or_caller(principal: Principal, owner: str, field_name: str) -> str:
    """``owner``, or the calling user when it is empty (the admin and anonymous callers must name it)."""
    if owner:
        return owner
    if principal.user_handle is not None:
        return principal.user_handle
    raise InvalidArgument.field(field_name, "is required")


async def resolve_project_access(
    conn: asyncpg.Connection,
    principal: Principal,
    owner: str,
    project_handle: str,
    need: Need,
    *,
    lock: RowLock = "none",
    owner_field: str = "owner",
    handle_field: str = "project_handle",
) -> ProjectAccess:
    """Find the project ``owner/project_handle`` and check that ``principal`` may use it for ``need``.

    The one implementation of the project permission matrix (module docstring); every RPC that addresses a
    project — ProjectService, embeddings and search — goes through it.

    Args:
        conn: Connection; inside a transaction when ``lock`` is not "none".
        principal: The caller.
        owner: Owner handle; empty means the calling user (INVALID_ARGUMENT for the admin and anonymous).
        project_handle: Project handle.
        need: "read" (get, list/get embeddings, search), "write" (upsert/delete embeddings) or "manage"
            (update, delete, share, transfer the project).
        lock: Row lock on the project for the rest of the transaction: "share" keeps the project (its
            instance, schema, existence) unchanged while e.g. embeddings are written; "update" for changing it.
        owner_field: Request field name of ``owner`` in error details.
        handle_field: Request field name of ``project_handle`` in error details.

    Returns:
        The project, with the caller's role and what embedding operations need (instance, dimensions, schema).

    Raises:
        InvalidArgument: a handle is malformed.
        Unauthenticated: anonymous caller, and the project is not public, absent, or the need is not "read".
        PermissionDenied: the caller may not see the project (whether or not it exists), or sees it in a role
            too weak for ``need``.
        NotFound: the project is absent and the caller is the admin or the named owner.
    """
    if need != "read":
        principal.require_authenticated()
    owner = _owner_or_caller(principal, owner, owner_field)
    check_handle(owner, owner_field)
    check_handle(project_handle, handle_field)
    name = f"{owner}/{project_handle}"
    row = await q.get_project(conn, owner, project_handle, principal.user_handle, lock=lock)
    role = _role_of(principal, row) if row is not None else None
    if row is None and (principal.is_admin or principal.is_user(owner)):
        raise NotFound.resource_missing("project", name, owner)
    if row is None or role is None:
        if principal.is_anonymous:
            raise Unauthenticated(f"project {name!r} is not public: send 'authorization: Bearer <key>'")
        raise PermissionDenied(f"you may not {_VERB[need]} project {name!r}")
    if role not in _ALLOWED[need]:
        if principal.is_anonymous:
            raise Unauthenticated(f"to {_VERB[need]} project {name!r} send 'authorization: Bearer <key>'")
        who = "anyone" if role == "public" else f"a{'n' if role == 'editor' else ''} {role}"
        allowed = "the owner and the admin" if need == "manage" else "editors, the owner and the admin"
        raise PermissionDenied(f"you are {who} of project {name!r}: only {allowed} may {_VERB[need]} it")
    dimensions = row.dimensions
    if lock != "none" and row.instance_id is not None:
        # keep the instance's dimensions fixed until the caller's transaction ends (re-read under the lock)
        dimensions = await q.lock_instance_dimensions(conn, row.instance_id)
    return ProjectAccess(
        project_id=row.project_id,
        owner=row.owner,
        project_handle=row.project_handle,
        role=role,
        instance_id=row.instance_id,
        instance=_instance_name(row),
        dimensions=dimensions,
        metadata_schema=row.metadata_schema,
        public_read=row.public_read,
        description=row.description,
        instance_usable=row.instance_usable,
    )


def _view(row: ProjectRow, role: str, count: int | None = None, shares: list[ShareRow] | None = None) -> ProjectView:
    return ProjectView(
        owner=row.owner,
        project_handle=row.project_handle,
        description=row.description,
        metadata_schema=row.metadata_schema or "",
        instance=_instance_name(row) or "",
        instance_missing=row.instance_id is None,
        public_read=row.public_read,
        role=role,
        number_of_embeddings=count,
        shares=shares or [],
    )


async def _full_view(conn: asyncpg.Connection, principal: Principal, owner: str, handle: str) -> ProjectView:
    """The project as GetProject shows it to ``principal`` (role recomputed; shares for owner and admin)."""
    row = await q.get_project(conn, owner, handle, principal.user_handle)
    if row is None:  # pragma: no cover - callers hold the row lock or just wrote it
        raise NotFound.resource_missing("project", f"{owner}/{handle}", owner)
    role = _role_of(principal, row)
    count = await q.count_embeddings(conn, row.project_id)
    shares = (
        await share_q.list_shares(conn, PROJECT_SHARES, row.project_id, None, SHARES_IN_GET)
        if role in ("owner", "admin")
        else []
    )
    return _view(row, role or "", count, shares)


def _check_description(value: str) -> None:
    check_max_length(value, DESCRIPTION_MAX, "project.description")


def _compile(text: str, limits: Limits) -> MetadataSchema | None:
    return compile_schema(text, "project.metadata_schema", limits) if text else None


async def _bindable_instance(
    conn: asyncpg.Connection, principal: Principal, project_owner: str, reference: str
) -> InstanceRef:
    """The instance ``reference`` names, if the project's owner may bind a project to it.

    A bare handle names the project owner's own instance. The owner must own the instance or have it shared
    with them (any role); for a user acting on their own project a refusal is PERMISSION_DENIED (NOT_FOUND only
    for their own absent instances), for the admin acting on someone's project it is FAILED_PRECONDITION.
    """
    fname = "project.instance"
    if not reference:
        raise InvalidArgument.field(
            fname, "is required: a project is bound to an LLM service instance ('owner/handle' or your own 'handle')"
        )
    i_owner, i_handle = parse_reference(reference, project_owner, fname)
    name = f"{i_owner}/{i_handle}"
    inst = await q.get_instance_for_user(conn, i_owner, i_handle, project_owner)
    if inst is None and (principal.is_admin or i_owner == project_owner):
        raise NotFound.resource_missing("instance", name, i_owner)
    if principal.is_admin:
        assert inst is not None
        if inst.user_role is None:
            raise FailedPrecondition(
                f"{project_owner!r} may not use instance {name!r}: it is neither theirs nor shared with them",
                preconditions=[
                    PreconditionViolation(
                        "INSTANCE_NOT_USABLE", f"instance:{name}", f"not owned by or shared with {project_owner}"
                    )
                ],
            )
        return inst
    if inst is None or inst.user_role is None:
        raise PermissionDenied(
            f"you may not use instance {name!r}: bind projects to your own instances or ones shared with you"
        )
    return inst


async def _check_dimensions(conn: asyncpg.Connection, access: ProjectAccess, new: InstanceRef) -> None:
    """Refuse a rebinding that would leave stored embeddings of another size than the instance makes."""
    new_name = f"{new.owner}/{new.instance_handle}"
    if access.dimensions is not None:
        if access.dimensions == new.dimensions or not await q.has_embeddings(conn, access.project_id):
            return
        held = f"{access.dimensions}-dimensional embeddings"
    else:  # no instance any more: look at what is stored
        if not await q.has_embeddings_of_other_dimension(conn, access.project_id, new.dimensions):
            return
        held = f"embeddings that are not {new.dimensions}-dimensional"
    raise FailedPrecondition(
        f"project {access.name!r} holds {held}; instance {new_name!r} makes {new.dimensions}-dimensional ones: "
        "delete the embeddings first or choose an instance with the same dimensions",
        preconditions=[
            PreconditionViolation(
                "DIMENSION_MISMATCH", f"project:{access.name}", f"instance {new_name} has {new.dimensions} dimensions"
            )
        ],
    )


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _check_stored_metadata(conn: asyncpg.Connection, access: ProjectAccess, schema: MetadataSchema) -> None:
    """Refuse a schema that stored embeddings' metadata violates, naming up to ``VIOLATION_SAMPLE`` of them.

    Streams the metadata in chunks through a cursor (inside the caller's transaction, which holds the project
    row FOR UPDATE, so no upload can slip in) and validates each chunk in a worker thread.
    """
    total = 0
    sample: list[tuple[str, str]] = []
    async for chunk in q.iter_embedding_metadata(conn, access.project_id):
        bad = await asyncio.to_thread(schema.violations, chunk)
        total += len(bad)
        sample.extend((text_id, str(v)) for text_id, v in bad[: VIOLATION_SAMPLE - len(sample)])
    if not total:
        return
    first_id, first_reason = sample[0]
    raise FailedPrecondition(
        f"metadata_schema: {total} stored embedding(s) of project {access.name!r} violate it; text_ids: "
        + ", ".join(repr(_clip(t)) for t, _ in sample)
        + (" …" if total > len(sample) else "")
        + f" (e.g. {_clip(first_id)!r} {first_reason}); fix or delete them first",
        preconditions=[
            PreconditionViolation("METADATA_SCHEMA_VIOLATION", f"embedding:{text_id}", reason)
            for text_id, reason in sample
        ],
    )


class Projects:
    """Use cases of ProjectService."""

    def __init__(self, pool: asyncpg.Pool, *, limits: Limits | None = None) -> None:
        """Args:
        pool: database pool.
        limits: size, depth and expansion limits of metadata schemas (``vdb_grpc.limits``).
        """
        self._pool = pool
        self._limits = limits or Limits()

    async def create(self, principal: Principal, p: ProjectInput) -> ProjectView:
        """Create a project bound to an instance its owner may use.

        A user creates projects for themselves (``owner`` empty or their handle); the admin names the owner.

        Raises:
            InvalidArgument: bad handle, description, schema, or no instance given.
            PermissionDenied: a user creating for someone else, or naming an instance they may not use.
            FailedPrecondition: (admin) the named owner may not use the instance.
            NotFound: the owner (admin) or the instance does not exist.
            AlreadyExists: the owner has a project with that handle.
        """
        principal.require_authenticated()
        owner = _owner_or_caller(principal, p.owner, "project.owner")
        if not principal.is_admin and not principal.is_user(owner):
            raise PermissionDenied("users may create projects only for themselves: leave project.owner empty")
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._insert(conn, principal, owner, p)

    async def _insert(self, conn: asyncpg.Connection, principal: Principal, owner: str, p: ProjectInput) -> ProjectView:
        check_handle(owner, "project.owner")
        check_handle(p.project_handle, "project.project_handle")
        _check_description(p.description)
        _compile(p.metadata_schema, self._limits)  # an empty project accepts any valid schema
        if principal.is_admin and not await q.user_exists(conn, owner):
            raise NotFound.resource_missing("user", owner)
        inst = await _bindable_instance(conn, principal, owner, p.instance)
        await q.insert_project(
            conn, owner, p.project_handle, p.description, p.metadata_schema or None, p.public_read, inst.instance_id
        )
        return await _full_view(conn, principal, owner, p.project_handle)

    async def get(self, principal: Principal, owner: str, handle: str) -> ProjectView:
        """A project with the caller's role, its number of embeddings, and (owner/admin) its shares."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            access = await resolve_project_access(conn, principal, owner, handle, "read")
            return await _full_view(conn, principal, access.owner, access.project_handle)

    async def list(
        self, principal: Principal, owner: str, include_public: bool, page_size: int, page_token: str
    ) -> ProjectPage:
        """Projects the caller owns or has shared with them, each once, by (owner, handle).

        ``include_public`` adds other users' public projects (role "public"). Anonymous callers must set it
        and get the public projects only. The admin lists every project (empty ``owner``) or what the named
        user would list, with that user's roles.
        """
        page = page_request("projects", page_size, page_token)
        after: tuple[str, str] | None = None
        if page.after is not None:
            if len(page.after) != 2 or not all(isinstance(k, str) for k in page.after):
                raise InvalidArgument.field("page_token", "is not a token returned by this list")
            after = (page.after[0], page.after[1])
        everything = False
        if principal.is_anonymous:
            if owner or not include_public:
                raise Unauthenticated(
                    "listing projects needs an API key; without one, set include_public (and no owner) "
                    "to list public projects"
                )
            viewer = None
        elif principal.is_admin:
            viewer = owner or None
            everything = not owner
        else:
            if owner and not principal.is_user(owner):
                raise PermissionDenied("users may list only their own projects: leave owner empty")
            viewer = principal.user_handle
        async with self._pool.acquire() as conn:
            if principal.is_admin and viewer is not None:
                check_handle(viewer, "owner")
                if not await q.user_exists(conn, viewer):
                    raise NotFound.resource_missing("user", viewer)
            rows = await q.list_projects(
                conn, viewer, include_public=include_public, everything=everything, after=after, limit=page.size + 1
            )
        views = [_view(r.project, r.role) for r in rows[: page.size]]
        token = next_token("projects", rows, page.size, lambda r: [r.project.owner, r.project.project_handle])
        return ProjectPage(views, token)

    async def update(
        self, principal: Principal, p: ProjectInput, fields: Collection[str], *, allow_missing: bool
    ) -> tuple[ProjectView, bool]:
        """Change the named fields (owner or admin); with ``allow_missing`` create an absent project.

        Returns:
            (project, created).

        Raises:
            InvalidArgument: unknown/immutable field in the mask, bad values, instance cleared.
            FailedPrecondition: new instance of other dimensions while embeddings exist; a schema that stored
                metadata violates (a sample of the violators is named).
        """
        principal.require_authenticated()
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidArgument.field(
                "update_mask",
                f"unknown or immutable field(s): {', '.join(sorted(unknown))}; allowed: "
                + ", ".join(sorted(UPDATABLE_FIELDS)),
            )
        if "description" in fields:
            _check_description(p.description)
        schema = _compile(p.metadata_schema, self._limits) if "metadata_schema" in fields else None
        return await update_or_create(
            lambda: self._update_once(principal, p, fields, schema, allow_missing=allow_missing)
        )

    async def _update_once(
        self,
        principal: Principal,
        p: ProjectInput,
        fields: Collection[str],
        schema: MetadataSchema | None,
        *,
        allow_missing: bool,
    ) -> tuple[ProjectView, bool]:
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                access = await resolve_project_access(
                    conn,
                    principal,
                    p.owner,
                    p.project_handle,
                    "manage",
                    lock="update",
                    owner_field="project.owner",
                    handle_field="project.project_handle",
                )
            except NotFound:
                if not allow_missing:
                    raise
                owner = _owner_or_caller(principal, p.owner, "project.owner")
                return await creating(self._insert(conn, principal, owner, p)), True
            instance_id = access.instance_id
            if "instance" in fields:
                inst = await _bindable_instance(conn, principal, access.owner, p.instance)
                if inst.instance_id != access.instance_id:
                    await _check_dimensions(conn, access, inst)
                instance_id = inst.instance_id
            metadata_schema = access.metadata_schema
            if "metadata_schema" in fields:
                if schema is not None and p.metadata_schema != access.metadata_schema:
                    await _check_stored_metadata(conn, access, schema)
                metadata_schema = p.metadata_schema or None
            await q.update_project(
                conn,
                access.project_id,
                p.description if "description" in fields else access.description,
                metadata_schema,
                p.public_read if "public_read" in fields else access.public_read,
                instance_id,
            )
            return await _full_view(conn, principal, access.owner, access.project_handle), False

    async def delete(self, principal: Principal, owner: str, handle: str) -> int:
        """Delete a project with its embeddings and shares in one transaction; return the embeddings removed."""
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_project_access(conn, principal, owner, handle, "manage", lock="update")
            removed = await q.delete_project_embeddings(conn, access.project_id)
            await q.delete_project(conn, access.project_id)
        return removed

    async def share(self, principal: Principal, owner: str, handle: str, user_handle: str, role: str) -> ShareRow:
        """Share with ``user_handle`` as reader or editor; sharing again changes the role (owner or admin)."""
        principal.require_authenticated()
        check_handle(user_handle, "user_handle")
        check_role(role)
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_project_access(conn, principal, owner, handle, "manage", lock="share")
            if user_handle == access.owner:
                raise InvalidArgument.field("user_handle", "is the project's owner, who has every right already")
            return await share_q.upsert_share(conn, PROJECT_SHARES, access.project_id, user_handle, role)

    async def unshare(self, principal: Principal, owner: str, handle: str, user_handle: str) -> None:
        """Remove ``user_handle``'s share (owner or admin); NOT_FOUND when there is none."""
        principal.require_authenticated()
        check_handle(user_handle, "user_handle")
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_project_access(conn, principal, owner, handle, "manage", lock="share")
            if not await share_q.delete_share(conn, PROJECT_SHARES, access.project_id, user_handle):
                raise NotFound(
                    f"project {access.name!r} is not shared with {user_handle!r}",
                    resource=ResourceRef("project share", f"{access.name}/{user_handle}", access.owner),
                )

    async def list_shares(
        self, principal: Principal, owner: str, handle: str, page_size: int, page_token: str
    ) -> SharePage:
        """The project's shares by user handle (owner or admin)."""
        page = page_request("project_shares", page_size, page_token)
        after = str(page.after[0]) if page.after else None
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            access = await resolve_project_access(conn, principal, owner, handle, "manage")
            rows = await share_q.list_shares(conn, PROJECT_SHARES, access.project_id, after, page.size + 1)
        return SharePage(rows[: page.size], next_token("project_shares", rows, page.size, lambda s: [s.user_handle]))

    async def transfer(self, principal: Principal, owner: str, handle: str, new_owner: str) -> ProjectView:
        """Give the project (and its embeddings) to ``new_owner`` (owner or admin).

        The new owner must be able to use the bound instance. A share the new owner had is dropped; other
        shares stay. The previous owner keeps no access (unless shared or public afterwards).

        Raises:
            InvalidArgument: bad handle, or ``new_owner`` already owns it.
            NotFound: ``new_owner`` does not exist.
            FailedPrecondition: ``new_owner`` may not use the project's instance.
            AlreadyExists: ``new_owner`` has a project with the same handle.
        """
        principal.require_authenticated()
        check_handle(new_owner, "new_owner")
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_project_access(conn, principal, owner, handle, "manage", lock="update")
            if new_owner == access.owner:
                raise InvalidArgument.field("new_owner", "already owns the project")
            if not await q.user_exists(conn, new_owner):
                raise NotFound.resource_missing("user", new_owner)
            if access.instance is not None:
                i_owner, _, i_handle = access.instance.partition("/")
                inst = await q.get_instance_for_user(conn, i_owner, i_handle, new_owner)
                if inst is None or inst.user_role is None:
                    raise FailedPrecondition(
                        f"{new_owner!r} may not use the project's instance {access.instance!r} (neither theirs nor "
                        "shared with them): share the instance with them or rebind the project first",
                        preconditions=[
                            PreconditionViolation(
                                "INSTANCE_NOT_USABLE", f"instance:{access.instance}", f"not usable by {new_owner}"
                            )
                        ],
                    )
            await q.set_project_owner(conn, access.project_id, new_owner, access.project_handle)
            await q.set_embeddings_owner(conn, access.project_id, new_owner)
            await share_q.delete_share(conn, PROJECT_SHARES, access.project_id, new_owner)
            return await _full_view(conn, principal, new_owner, access.project_handle)
