"""Domain errors: what went wrong, in words a client may see, plus structured details.

No gRPC here. ``vdb_grpc.interceptors`` maps each class to a status code in one table and turns the details
into ``google.rpc`` messages (BadRequest, PreconditionFailure, ResourceInfo, ErrorInfo).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid input field (becomes ``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition (becomes ``google.rpc.PreconditionFailure.Violation``)."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class ResourceRef:
    """The resource an error is about (becomes ``google.rpc.ResourceInfo``)."""

    resource_type: str
    resource_name: str
    owner: str = ""


@dataclass(frozen=True)
class ErrorInfo:
    """Machine-readable context of an error (becomes ``google.rpc.ErrorInfo`` with domain "vdb-grpc").

    Attributes:
        reason: UPPER_SNAKE_CASE constant naming the kind of failure, e.g. ``STREAM_BATCH_FAILED``.
        metadata: String values a client may act on, e.g. how many batches of a stream were committed.
    """

    reason: str
    metadata: tuple[tuple[str, str], ...] = ()


class VdbError(Exception):
    """Base of every error a client may see. ``message`` must be safe to show: no secrets, SQL or traces."""

    def __init__(
        self,
        message: str,
        *,
        field_violations: tuple[FieldViolation, ...] | list[FieldViolation] = (),
        preconditions: tuple[PreconditionViolation, ...] | list[PreconditionViolation] = (),
        resource: ResourceRef | None = None,
        info: ErrorInfo | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        """``retry_after_seconds``: when a retry may succeed (becomes ``google.rpc.RetryInfo``), e.g. after a
        rate limit."""
        super().__init__(message)
        self.message = message
        self.field_violations = tuple(field_violations)
        self.preconditions = tuple(preconditions)
        self.resource = resource
        self.info = info
        self.retry_after_seconds = retry_after_seconds

    def __str__(self) -> str:
        return self.message


class InvalidArgument(VdbError):
    """The request itself is malformed or violates a validation rule."""

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """An error about a single field, with the field named in message and details."""
        return cls(f"{field}: {description}", field_violations=[FieldViolation(field, description)])


class TextTooLong(InvalidArgument):
    """The embedding provider refused a text as too long; ``index`` is its position in the texts sent.

    Server-side embedding restates it naming the item's text_id (``vdb_grpc.domain.texts``)."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


class NotFound(VdbError):
    """The addressed resource does not exist (and the caller could have seen it)."""

    @classmethod
    def resource_missing(cls, resource_type: str, name: str, owner: str = "") -> NotFound:
        """Standard message and ResourceInfo for a missing resource (a long name is cut: it came from the client)."""
        if len(name) > 200:
            name = name[:199] + "…"
        return cls(f"{resource_type} {name!r} not found", resource=ResourceRef(resource_type, name, owner))


class AlreadyExists(VdbError):
    """A resource with that identity (or a unique field such as email) exists."""


class FailedPrecondition(VdbError):
    """The system is not in a state that allows the operation (resource in use, conflicting dimensions…)."""


class PermissionDenied(VdbError):
    """The caller is authenticated but may not do this."""


class Unauthenticated(VdbError):
    """No valid credentials for an operation that needs them."""


class ResourceExhausted(VdbError):
    """A size or count limit was exceeded."""


class Unavailable(VdbError):
    """A dependency (the database) cannot be reached; retrying later may help."""


class Aborted(VdbError):
    """A concurrency conflict (e.g. serialization failure); the client may retry the whole operation."""


class DeadlineExceeded(VdbError):
    """The operation took longer than allowed (statement timeout)."""
