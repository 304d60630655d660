"""The one boundary where domain errors become gRPC statuses, plus authentication and the access log.

Every RPC handler is wrapped once: resolve the caller's key to a ``Principal`` (stored in a context
variable for the servicer), run the handler, map ``VdbError`` subclasses to status codes with ``google.rpc``
details, turn anything unexpected into INTERNAL with a request id (logged with its traceback server-side,
nothing of it sent to the client), and write one access-log line. When an RPC that may change keys or
permissions ends (``vdb_grpc.cache.mutates_access``), the interceptor tells the authorization cache, so the
next request (here at once, on other replicas via NOTIFY) sees the change. Request and response payloads are never
logged: they may hold API keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from vdb_grpc import errors
from vdb_grpc.auth import ADMIN, ANONYMOUS, Principal, PrincipalKind, admin_key_matches, bearer_token, current_principal
from vdb_grpc.cache import mutates_access
from vdb_grpc.db import UNAVAILABLE_ERRORS
from vdb_grpc.runtime.deadline import clear_call_deadline, set_call_deadline

log = logging.getLogger(__name__)
access_log = logging.getLogger("vdb_grpc.access")

#: The one table from domain error to gRPC status (subclasses map through their nearest listed base).
STATUS_OF: dict[type[errors.VdbError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.VdbError: grpc.StatusCode.UNKNOWN,
}

#: ``google.rpc.ErrorInfo.domain`` of our errors.
ERROR_DOMAIN = "vdb-grpc"

#: Methods that bypass authentication entirely (health checks and reflection).
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

KeyResolver = Callable[[str], Awaitable[Principal | None]]


def status_code_for(exc: errors.VdbError) -> grpc.StatusCode:
    """The status for a domain error (walks the class hierarchy)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.UNKNOWN


def rich_status(code: grpc.StatusCode, exc: errors.VdbError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with BadRequest / PreconditionFailure / ResourceInfo / ErrorInfo details."""
    details: list[Any] = []
    if exc.field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in exc.field_violations
                ]
            )
        )
    if exc.preconditions:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in exc.preconditions
                ]
            )
        )
    if exc.resource is not None:
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=exc.resource.resource_type,
                resource_name=exc.resource.resource_name,
                owner=exc.resource.owner,
                description=exc.message,
            )
        )
    if exc.info is not None:
        details.append(
            error_details_pb2.ErrorInfo(reason=exc.info.reason, domain=ERROR_DOMAIN, metadata=dict(exc.info.metadata))
        )
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code.value[0], message=exc.message, details=packed)


def translate_exception(exc: BaseException) -> errors.VdbError | None:
    """Known infrastructure failures → domain errors; None for real bugs."""
    if isinstance(exc, errors.VdbError):
        return exc
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        return errors.DeadlineExceeded("the database statement took too long and was cancelled")
    if isinstance(exc, asyncpg.exceptions.SerializationError | asyncpg.exceptions.DeadlockDetectedError):
        return errors.Aborted("concurrent modification; retry the request")
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return errors.Unavailable("the database is unavailable; retry later")
    return None


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, error mapping and access logging for every RPC."""

    def __init__(
        self,
        *,
        admin_key: str | None,
        resolve_user_key: KeyResolver,
        on_access_change: Callable[[], None] | None = None,
    ) -> None:
        """Args:
        admin_key: the admin's bearer key (None: no admin).
        resolve_user_key: user key → principal (None for an unknown key).
        on_access_change: called when an RPC that may change keys or permissions ends (``vdb_grpc.cache``).
        """
        self._admin_key = admin_key
        self._resolve_user_key = resolve_user_key
        self._on_access_change = on_access_change
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:  # the services are fixed once the server starts: wrap each method once
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(UNAUTHENTICATED_PREFIXES):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        bump = self._on_access_change if mutates_access(method) else None
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary, bump),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary, bump),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream, bump),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, handler.stream_stream, bump),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            return ANONYMOUS
        if admin_key_matches(token, self._admin_key):
            return ADMIN
        principal = await self._resolve_user_key(token)
        if principal is None:
            raise errors.Unauthenticated("invalid API key")
        return principal

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]], bump: Callable[[], None] | None
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = uuid.uuid4().hex[:16]
            started = time.perf_counter()
            principal: Principal = ANONYMOUS
            code = grpc.StatusCode.OK
            set_call_deadline(context.time_remaining())  # bounds every database statement of this call
            try:
                principal = await self._authenticate(context)
                current_principal.set(principal)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code, message, trailers = self._to_status(method, request_id, exc)
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                clear_call_deadline()  # the NOTIFY sent for a change must not die with the call's deadline
                if bump is not None:  # after the change committed (or failed): cached answers may be stale
                    bump()
                self._log(method, code, principal, request_id, started)

        return wrapper

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]], bump: Callable[[], None] | None
    ) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request_id = uuid.uuid4().hex[:16]
            started = time.perf_counter()
            principal: Principal = ANONYMOUS
            code = grpc.StatusCode.OK
            set_call_deadline(context.time_remaining())  # bounds every database statement of this call
            try:
                principal = await self._authenticate(context)
                current_principal.set(principal)
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code, message, trailers = self._to_status(method, request_id, exc)
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                clear_call_deadline()  # the NOTIFY sent for a change must not die with the call's deadline
                if bump is not None:  # after the change committed (or failed): cached answers may be stale
                    bump()
                self._log(method, code, principal, request_id, started)

        return wrapper

    @staticmethod
    def _to_status(
        method: str, request_id: str, exc: Exception
    ) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
        err = translate_exception(exc)
        if err is None:
            log.error("internal error in %s (request_id=%s)", method, request_id, exc_info=exc)
            err = errors.VdbError(f"internal error (request_id={request_id})")
            code = grpc.StatusCode.INTERNAL
        else:
            code = status_code_for(err)
            if err is not exc:
                log.warning("%s in %s (request_id=%s): %s", code.name, method, request_id, type(exc).__name__)
        trailers = (
            ("grpc-status-details-bin", rich_status(code, err).SerializeToString()),
            ("x-request-id", request_id),
        )
        return code, err.message, trailers

    @staticmethod
    def _log(method: str, code: grpc.StatusCode, principal: Principal, request_id: str, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Successful calls log at DEBUG so a busy server does not drown in lines; refusals at INFO.
        if code is grpc.StatusCode.OK:
            level = logging.DEBUG
        elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
            level = logging.ERROR
        else:
            level = logging.INFO
        access_log.log(
            level,
            "%s %s %.1fms principal=%s request_id=%s",
            method,
            code.name,
            elapsed_ms,
            principal.label(),
            request_id,
        )


__all__ = ["STATUS_OF", "PrincipalKind", "ServiceInterceptor", "rich_status", "status_code_for", "translate_exception"]
