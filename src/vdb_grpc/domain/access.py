"""Permission checks shared by the domain modules."""

from __future__ import annotations

from vdb_grpc.auth import Principal
from vdb_grpc.errors import PermissionDenied
from vdb_grpc.limits import show


def require_admin(principal: Principal, action: str) -> None:
    """Only the admin may ``action`` (anonymous callers get UNAUTHENTICATED first)."""
    principal.require_authenticated()
    if not principal.is_admin:
        raise PermissionDenied(f"only the admin may {action}")


def require_self_or_admin(principal: Principal, user_handle: str, action: str) -> None:
    """The admin, or the user ``user_handle`` themselves."""
    principal.require_authenticated()
    if not (principal.is_admin or principal.is_user(user_handle)):
        raise PermissionDenied(f"only {show(user_handle)} themselves or the admin may {action}")
