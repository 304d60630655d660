"""The one boundary where domain errors become gRPC statuses, plus authentication and the access log.

Every RPC handler is wrapped once: resolve the caller's key to a ``Principal`` (stored in a context
variable for the servicer), run the handler, map ``VdbError`` subclasses to status codes with ``google.rpc``
details, turn anything unexpected into INTERNAL with a request id (logged with its traceback server-side,
nothing of it sent to the client), and write one access-log line. When an RPC that may change keys or
permissions ends (``vdb_grpc.cache.mutates_access``) and may have changed something (not when it was refused,
see ``_may_have_changed``), the interceptor tells the authorization cache, so the next request (here at once,
on other replicas via NOTIFY) sees the change. Request and response payloads are never
logged: they may hold API keys.

The interceptor is also the one input boundary (docs/limits.md): it decodes each request itself (large ones in a
worker thread), so bytes that are no valid request are INVALID_ARGUMENT instead of gRPC's UNKNOWN, and runs
``vdb_grpc.limits.check_request`` on every decoded message (NUL characters, page-token size) before a servicer
sees it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from vdb_grpc import errors
from vdb_grpc.auth import (
    ADMIN,
    ANONYMOUS,
    Principal,
    PrincipalKind,
    admin_key_matches,
    bearer_token,
    current_principal,
    current_reauthenticate,
)
from vdb_grpc.cache import mutates_access
from vdb_grpc.db import UNAVAILABLE_ERRORS
from vdb_grpc.limits import Limits, check_request, scan_wire, too_large
from vdb_grpc.runtime import read_routing
from vdb_grpc.runtime.deadline import clear_call_deadline, set_call_deadline
from vdb_grpc.runtime.logging import request_id as request_id_var

log = logging.getLogger(__name__)
access_log = logging.getLogger("vdb_grpc.access")

#: The one table from domain error to gRPC status (subclasses map through their nearest listed base).
STATUS_OF: dict[type[errors.VdbError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TextTooLong: grpc.StatusCode.INVALID_ARGUMENT,
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

#: Requests larger than this on the wire are decoded and checked in a worker thread, off the event loop.
DECODE_INLINE_BYTES = 256 * 1024
#: Last-resort caps on what an error puts into the trailers (gRPC clients refuse metadata over 8-16 KiB).
MESSAGE_MAX_CHARS = 1000
DETAILS_MAX_BYTES = 7000
#: Client data PostgreSQL refused as a value (SQLSTATE class 22, "data exception": a character it cannot
#: store, a number out of range, text it cannot parse …) and asyncpg's own refusal to encode a parameter.
DATA_ERRORS = (asyncpg.exceptions.DataError, asyncpg.exceptions._base.DataError)


class RpcObserver(Protocol):
    """Receives every call's start, messages and end (``vdb_grpc.runtime.metrics.Metrics``)."""

    def rpc_started(self, method: str, rpc_type: str) -> None: ...

    def rpc_handled(self, method: str, rpc_type: str, code: str, seconds: float) -> None: ...

    def msg_in(self, method: str, rpc_type: str) -> None: ...

    def msg_out(self, method: str, rpc_type: str) -> None: ...


#: Called after authentication with the principal and the peer; raises a VdbError to refuse the call
#: (``vdb_grpc.runtime.ratelimit.RateLimiter.admit``).
Admission = Callable[[Principal, str], None]


def status_code_for(exc: errors.VdbError) -> grpc.StatusCode:
    """The status for a domain error (walks the class hierarchy)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.UNKNOWN


def rich_status(code: grpc.StatusCode, exc: errors.VdbError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with BadRequest / PreconditionFailure / ResourceInfo / ErrorInfo / RetryInfo details."""
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
    if exc.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, math.ceil(exc.retry_after_seconds * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
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
    if isinstance(exc, DATA_ERRORS):
        # By class, never by message (which may quote the value): the request carried a value PostgreSQL
        # cannot take. Every field is checked before it gets here; this is the safety net for what slips by.
        return errors.InvalidArgument(
            f"a value in the request cannot be stored or compared by the database ({type(exc).__name__}"
            + (f", SQLSTATE {exc.sqlstate}" if getattr(exc, "sqlstate", None) else "")
            + ")"
        )
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return errors.Unavailable("the database is unavailable; retry later")
    if isinstance(exc, RecursionError | OverflowError):
        # Only client data nests or grows without bound: parsing it is what overflowed.
        return errors.InvalidArgument(
            f"the request is nested too deeply or holds too large a number ({type(exc).__name__})"
        )
    return None


def _may_have_changed(exc: Exception, principal: Principal, handling: bool, request_streaming: bool) -> bool:
    """Whether an access-changing RPC that ended with ``exc`` may still have committed a change.

    A domain refusal (``VdbError``) of a unary-request RPC means its one transaction rolled back: nothing
    changed, so the authorization caches stay and no replica is notified (refused calls must not amplify into
    cache flushes and NOTIFYs). A request-streaming RPC commits per message, so a refusal after the handler
    started (``handling``) may follow committed messages: that still counts as a change, unless the caller is
    anonymous (who can change nothing). Anything else (INTERNAL, CANCELLED, a lost connection) leaves the
    outcome unknown and counts as a change.
    """
    if not isinstance(exc, errors.VdbError):
        return True
    return request_streaming and handling and not principal.is_anonymous


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, error mapping and access logging for every RPC."""

    def __init__(
        self,
        *,
        admin_key: str | None,
        resolve_user_key: KeyResolver,
        on_access_change: Callable[[], None] | None = None,
        observer: RpcObserver | None = None,
        admit: Admission | None = None,
        access_log_mode: str = "errors",
        limits: Limits | None = None,
    ) -> None:
        """Args:
        admin_key: the admin's bearer key (None: no admin).
        resolve_user_key: user key → principal (None for an unknown key).
        on_access_change: called when an RPC that may change keys or permissions ends (``vdb_grpc.cache``).
        observer: told of every call's start, messages and end (metrics); None: nobody.
        admit: may refuse an authenticated call (rate limits); None: every call is admitted.
        access_log_mode: "all" (an INFO access record per call), "errors" (successful calls at DEBUG) or "off".
        limits: per-request limits checked on every decoded request (``vdb_grpc.limits.check_request``).
        """
        self._limits = limits or Limits()
        self._admin_key = admin_key
        self._resolve_user_key = resolve_user_key
        self._on_access_change = on_access_change
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._observer = observer
        self._admit = admit
        self._access_log_mode = access_log_mode

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
        if handler is None:
            return handler
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            wrapped = self._wrap_decode_only(handler)
        else:
            wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap_decode_only(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Health and reflection: no authentication, no access log, but the same decoding as every other call,
        so bytes that are no valid request are INVALID_ARGUMENT there too instead of gRPC's UNKNOWN."""
        deserialize = handler.request_deserializer

        async def decode(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await self._decode(raw, deserialize)
            except errors.InvalidArgument as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

        if handler.unary_unary:
            unary = handler.unary_unary

            async def unary_call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
                return await unary(await decode(raw, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary_call, request_deserializer=_keep_bytes, response_serializer=handler.response_serializer
            )
        if handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream):
            writes = handler.unary_stream  # Health.Watch: a coroutine that writes with context.write

            async def watch_call(raw: Any, context: grpc.aio.ServicerContext) -> None:
                await writes(await decode(raw, context), context)

            return grpc.unary_stream_rpc_method_handler(
                watch_call, request_deserializer=_keep_bytes, response_serializer=handler.response_serializer
            )
        if handler.stream_stream and inspect.isasyncgenfunction(handler.stream_stream):
            streams = handler.stream_stream  # reflection: an async generator over the request stream

            async def stream_call(raw_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                async def requests() -> AsyncIterator[Any]:
                    async for raw in raw_iterator:
                        yield await decode(raw, context)

                async for item in streams(requests(), context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(
                stream_call, request_deserializer=_keep_bytes, response_serializer=handler.response_serializer
            )
        return handler

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        bump = self._on_access_change if mutates_access(method) else None
        # gRPC would turn a deserializer's exception into UNKNOWN ("Unexpected DecodeError"): the wrapped
        # deserializer only keeps the bytes; the handler wrapper decodes and checks them (``_decode``).
        deserialize = handler.request_deserializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, self._unary_in(deserialize, handler.unary_unary), bump, "unary"),
                request_deserializer=_keep_bytes,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, self._stream_in(deserialize, handler.stream_unary), bump, "client_stream"),
                request_deserializer=_keep_bytes,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(
                    method,
                    self._unary_in_stream(deserialize, handler.unary_stream),
                    bump,
                    "server_stream",
                ),
                request_deserializer=_keep_bytes,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(
                    method,
                    self._stream_in_stream(deserialize, handler.stream_stream),
                    bump,
                    "bidi_stream",
                ),
                request_deserializer=_keep_bytes,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _decode(self, raw: Any, deserialize: Callable[[bytes], Any] | None) -> Any:
        """The request message of ``raw`` bytes, checked by ``limits.check_request``; large ones in a thread.

        Raises:
            errors.InvalidArgument: bytes that are no valid request (corrupt, invalid UTF-8 in a string field,
                nested deeper than protobuf decodes), or a request ``check_request`` refuses.
        """
        if deserialize is None or not isinstance(raw, bytes | bytearray | memoryview):
            return raw
        if len(raw) > DECODE_INLINE_BYTES:
            return await asyncio.to_thread(self._decode_now, bytes(raw), deserialize)
        return self._decode_now(raw, deserialize)

    def _decode_now(self, raw: Any, deserialize: Callable[[bytes], Any]) -> Any:
        struct_limit = 4 * self._limits.metadata_bytes  # JSON is at most ~4x smaller than a Struct's wire form
        descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
        may_hold_nul = b"\x00" in raw
        if descriptor is not None and len(raw) > struct_limit:
            # One pass over the tags (large requests: uploads): oversized Structs, and whether a string field
            # holds a 0x00 byte at all -- vectors always do, so the raw test alone would walk every upload.
            scan = scan_wire(bytes(raw), descriptor, struct_limit)
            if scan.oversized is not None:
                path, size = scan.oversized
                raise too_large(path, "has about", size, self._limits.metadata_bytes, "VDB_MAX_METADATA_BYTES")
            may_hold_nul = scan.may_hold_nul
        try:
            message = deserialize(raw)
        except Exception as exc:  # DecodeError, or RecursionError from nesting: the bytes are the client's
            raise errors.InvalidArgument(
                "request: cannot be decoded as the method's request message (corrupt bytes, invalid UTF-8 in a "
                f"string field, or nested too deeply; {type(exc).__name__})",
                field_violations=[errors.FieldViolation("request", "cannot be decoded")],
            ) from None
        check_request(message, may_hold_nul, self._limits)
        return message

    def _unary_in(self, deserialize: Any, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            return await behavior(await self._decode(raw, deserialize), context)

        return call

    def _unary_in_stream(
        self, deserialize: Any, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(raw: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in behavior(await self._decode(raw, deserialize), context):
                yield item

        return call

    def _messages(self, deserialize: Any, raw_iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def messages() -> AsyncIterator[Any]:
            async for raw in raw_iterator:
                yield await self._decode(raw, deserialize)

        return messages()

    def _stream_in(self, deserialize: Any, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(raw_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await behavior(self._messages(deserialize, raw_iterator), context)

        return call

    def _stream_in_stream(
        self, deserialize: Any, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(raw_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in behavior(self._messages(deserialize, raw_iterator), context):
                yield item

        return call

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
        self,
        method: str,
        behavior: Callable[..., Awaitable[Any]],
        bump: Callable[[], None] | None,
        rpc_type: str = "unary",
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = uuid.uuid4().hex[:16]
            started = time.perf_counter()
            principal: Principal = ANONYMOUS
            code = grpc.StatusCode.OK
            handling = False
            changed = True  # until known otherwise: a change may have committed
            request_streaming = rpc_type in ("client_stream", "bidi_stream")
            self._begin(method, rpc_type, request_id)
            set_call_deadline(context.time_remaining())  # bounds every database statement of this call
            try:
                principal = await self._authenticate_and_admit(method, context)
                current_principal.set(principal)
                if request_streaming:  # each message is authorized again (a key may be revoked mid-stream)
                    current_reauthenticate.set(functools.partial(self._authenticate, context))
                handling = True
                if rpc_type == "client_stream":
                    request = self._counted(method, rpc_type, request)
                elif self._observer is not None:
                    self._observer.msg_in(method, rpc_type)
                response = await behavior(request, context)
                if self._observer is not None:
                    self._observer.msg_out(method, rpc_type)
                return response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                changed = _may_have_changed(exc, principal, handling, request_streaming)
                code, message, trailers = self._to_status(method, request_id, exc)
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                clear_call_deadline()  # the NOTIFY sent for a change must not die with the call's deadline
                if bump is not None and changed:  # after the change committed: cached answers may be stale
                    bump()
                self._end(method, rpc_type, code, principal, request_id, started, context)

        return wrapper

    def _wrap_stream(
        self,
        method: str,
        behavior: Callable[..., AsyncIterator[Any]],
        bump: Callable[[], None] | None,
        rpc_type: str = "server_stream",
    ) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request_id = uuid.uuid4().hex[:16]
            started = time.perf_counter()
            principal: Principal = ANONYMOUS
            code = grpc.StatusCode.OK
            handling = False
            changed = True  # until known otherwise: a change may have committed
            request_streaming = rpc_type in ("client_stream", "bidi_stream")
            self._begin(method, rpc_type, request_id)
            set_call_deadline(context.time_remaining())  # bounds every database statement of this call
            try:
                principal = await self._authenticate_and_admit(method, context)
                current_principal.set(principal)
                if request_streaming:  # each message is authorized again (a key may be revoked mid-stream)
                    current_reauthenticate.set(functools.partial(self._authenticate, context))
                handling = True
                if rpc_type == "bidi_stream":
                    request = self._counted(method, rpc_type, request)
                elif self._observer is not None:
                    self._observer.msg_in(method, rpc_type)
                observer = self._observer
                async for item in behavior(request, context):
                    if observer is not None:
                        observer.msg_out(method, rpc_type)
                    yield item
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                changed = _may_have_changed(exc, principal, handling, request_streaming)
                code, message, trailers = self._to_status(method, request_id, exc)
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                clear_call_deadline()  # the NOTIFY sent for a change must not die with the call's deadline
                if bump is not None and changed:  # after the change committed: cached answers may be stale
                    bump()
                self._end(method, rpc_type, code, principal, request_id, started, context)

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
        message = err.message
        if len(message) > MESSAGE_MAX_CHARS:  # last resort: every echo should already be short (limits.show)
            message = err.message = message[: MESSAGE_MAX_CHARS - 1] + "…"
        details = rich_status(code, err).SerializeToString()
        if len(details) > DETAILS_MAX_BYTES:
            details = status_pb2.Status(code=code.value[0], message=message).SerializeToString()
        trailers = (
            ("grpc-status-details-bin", details),
            ("x-request-id", request_id),
        )
        return code, message, trailers

    # --- observation, admission and the access log (metrics, rate limits, read routing) ---------------------

    def _begin(self, method: str, rpc_type: str, request_id: str) -> None:
        request_id_var.set(request_id)  # every record logged while serving this call carries it
        if self._observer is not None:
            self._observer.rpc_started(method, rpc_type)

    async def _authenticate_and_admit(self, method: str, context: grpc.aio.ServicerContext) -> Principal:
        """Authenticate, then let the rate limit refuse (an invalid key counts against the caller's address,
        so keys cannot be guessed at full speed); from here on reads may use the read replica (the key was
        resolved on the primary)."""
        try:
            principal = await self._authenticate(context)
        except errors.Unauthenticated:
            if self._admit is not None:
                self._admit(ANONYMOUS, context.peer() or "")
            raise
        if self._admit is not None:
            self._admit(principal, context.peer() or "")
        read_routing.mark_call(method)
        return principal

    def _counted(self, method: str, rpc_type: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        observer = self._observer
        if observer is None:
            return requests

        async def counted() -> AsyncIterator[Any]:
            async for message in requests:
                observer.msg_in(method, rpc_type)
                yield message

        return counted()

    def _end(
        self,
        method: str,
        rpc_type: str,
        code: grpc.StatusCode,
        principal: Principal,
        request_id: str,
        started: float,
        context: grpc.aio.ServicerContext,
    ) -> None:
        elapsed = time.perf_counter() - started
        if self._observer is not None:
            self._observer.rpc_handled(method, rpc_type, code.name, elapsed)
        self._log(method, code, principal, request_id, elapsed * 1000, context.peer() or "")

    def _log(
        self, method: str, code: grpc.StatusCode, principal: Principal, request_id: str, elapsed_ms: float, peer: str
    ) -> None:
        mode = self._access_log_mode
        if mode == "off":
            return
        # By default successful calls log at DEBUG so a busy server does not drown in lines; refusals at INFO.
        if code is grpc.StatusCode.OK:
            level = logging.INFO if mode == "all" else logging.DEBUG
        elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
            level = logging.ERROR
        else:
            level = logging.INFO
        if not access_log.isEnabledFor(level):
            return
        access_log.log(
            level,
            "%s %s %.1fms principal=%s peer=%s request_id=%s",
            method,
            code.name,
            elapsed_ms,
            principal.label(),
            peer,
            request_id,
            extra={
                "method": method,
                "principal": principal.label(),
                "peer": peer,
                "code": code.name,
                "duration_ms": round(elapsed_ms, 3),
                "request_id": request_id,
            },
        )


def _keep_bytes(raw: bytes) -> bytes:
    """The request deserializer gRPC calls: hands the bytes on untouched (``ServiceInterceptor._decode``)."""
    return raw


__all__ = ["STATUS_OF", "PrincipalKind", "ServiceInterceptor", "rich_status", "status_code_for", "translate_exception"]
