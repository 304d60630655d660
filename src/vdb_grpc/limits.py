"""Bounded work per request: the size limits of client data, the one check of every decoded request, echoes.

Three things live here because every layer needs them and none owns them:

- ``Limits``: how large or deep the client data a request carries may be (``VDB_MAX_*`` settings, see
  docs/limits.md). Each refusal is INVALID_ARGUMENT naming the field, the limit and its setting.
- ``check_request``: the one input boundary. The interceptor runs it on every decoded request message before
  a servicer sees it: it walks every field once and refuses a string holding a NUL character (PostgreSQL
  ``text`` and ``jsonb`` cannot hold one; every other Unicode scalar value survives, and protobuf itself
  refuses invalid UTF-8 and so lone surrogates), naming the field path (``embeddings[3].metadata.title``),
  and refuses an overlong ``page_token``.
- ``show``: how a client value is echoed in a message or error detail: quoted and cut to a short prefix, so an
  error about a 7,000-character handle still fits the gRPC trailers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vdb_grpc.errors import InvalidArgument

KIB = 1024
#: Characters of a client value kept when it is echoed (``show``).
SHOWN_CHARS = 40
#: Integral numbers up to this magnitude are exact in a double and become Python ints.
EXACT_INT = 2.0**53


@dataclass(frozen=True)
class Limits:
    """What one request may make the server parse, validate and store (defaults = the settings' defaults).

    Attributes:
        metadata_bytes: ``VDB_MAX_METADATA_BYTES``: one embedding's metadata as compact UTF-8 JSON.
        metadata_depth: ``VDB_MAX_METADATA_DEPTH``: nesting of objects/arrays in one metadata value (also of a
            search condition's value); ``{"a": 1}`` has depth 1.
        schema_bytes: ``VDB_MAX_SCHEMA_BYTES``: a project's metadata_schema text (UTF-8).
        schema_depth: ``VDB_MAX_SCHEMA_DEPTH``: nesting of objects/arrays in a metadata_schema.
        schema_subschemas: ``VDB_MAX_SCHEMA_SUBSCHEMAS``: subschemas a metadata_schema amounts to with every
            ``$ref`` expanded (recursive references unrolled ``metadata_depth`` times): bounds what validating
            one value may cost, e.g. against ``$defs`` whose ``allOf`` names the next level twice.
        text_chars: ``VDB_MAX_TEXT_CHARS``: one embedding's ``text``.
        page_token_chars: ``VDB_MAX_PAGE_TOKEN_CHARS``: a ``page_token`` (ours are far shorter).
    """

    metadata_bytes: int = 64 * KIB
    metadata_depth: int = 16
    schema_bytes: int = 64 * KIB
    schema_depth: int = 32
    schema_subschemas: int = 10_000
    text_chars: int = 1_000_000
    page_token_chars: int = 1024


def show(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A client value for messages and error details: ``repr`` of it, cut to ``limit`` characters ("…" last)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[: limit - 1] + "…")
    text = repr(value)
    return text if len(text) <= limit + 2 else text[: limit + 2] + "…"


def too_large(field: str, what: str, size: int, limit: int, setting: str) -> InvalidArgument:
    """The refusal of a value over a size limit, naming the field, the limit and its setting."""
    return InvalidArgument.field(field, f"{what} {size:,} bytes, more than the limit of {limit:,} ({setting})")


# --- JSON values from protobuf Struct/Value ----------------------------------------------------------------


class _TooDeep(Exception):
    pass


class _NotFinite(Exception):
    pass


def json_object(s: Any, max_depth: int, field: str, *, finite: bool = True) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict; INVALID_ARGUMENT naming ``field`` when it nests deeper than
    ``max_depth`` or (with ``finite``) holds NaN or infinity (JSON has no spelling for them)."""
    try:
        return _object(s, max_depth, finite)
    except _TooDeep:
        raise InvalidArgument.field(
            field, f"nests deeper than the limit of {max_depth} levels (VDB_MAX_METADATA_DEPTH)"
        ) from None
    except _NotFinite:
        raise InvalidArgument.field(field, "holds NaN or infinity, which JSON cannot represent") from None


def json_value(v: Any, max_depth: int, field: str) -> Any:
    """A ``google.protobuf.Value`` as a plain JSON value, with the checks of ``json_object``."""
    try:
        return _value(v, max_depth + 1, True)
    except _TooDeep:
        raise InvalidArgument.field(
            field, f"nests deeper than the limit of {max_depth} levels (VDB_MAX_METADATA_DEPTH)"
        ) from None
    except _NotFinite:
        raise InvalidArgument.field(field, "holds NaN or infinity, which JSON cannot represent") from None


def _object(s: Any, depth: int, finite: bool) -> dict[str, Any]:
    if depth <= 0:
        raise _TooDeep
    fields = s.fields
    return {k: _value(fields[k], depth, finite) for k in fields}  # iterating keys beats the map's items() view


def _value(v: Any, depth: int, finite: bool) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        x = v.number_value
        if x.is_integer() and -EXACT_INT <= x <= EXACT_INT:
            return int(x)
        if finite and not math.isfinite(x):
            raise _NotFinite
        return x
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _object(v.struct_value, depth - 1, finite)
    if kind == "list_value":
        if depth <= 1:
            raise _TooDeep
        return [_value(x, depth - 1, finite) for x in v.list_value.values]
    return None


# --- the one check of every decoded request ----------------------------------------------------------------

_STRUCT = "google.protobuf.Struct"
#: Structs larger than this (wire bytes) are not walked for NUL characters by ``check_request``.
STRUCT_WALK_BYTES = 256 * KIB
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _nul_path(msg: Message) -> str | None:
    """The path of the first string (or map key) in ``msg`` holding a NUL character, else None."""
    stack: list[tuple[Message, str]] = [(msg, "")]
    while stack:
        m, prefix = stack.pop()
        name = m.DESCRIPTOR.full_name
        if name == _STRUCT:
            if m.ByteSize() > STRUCT_WALK_BYTES:
                # Too large to walk key by key here; JSON data is also checked where it is encoded (uploads
                # refuse such metadata by size and name NUL characters per item; PostgreSQL refuses \u0000
                # in a condition value, which the interceptor maps to INVALID_ARGUMENT).
                continue
            fields = m.fields
            for k in fields:
                path = f"{prefix}.{k}" if prefix else k
                if "\x00" in k:
                    return f"{prefix}[key {show(k)}]"
                stack.append((fields[k], path))
            continue
        if name == _VALUE:
            kind = m.WhichOneof("kind")
            if kind == "string_value" and "\x00" in m.string_value:
                return prefix
            if kind == "struct_value":
                stack.append((m.struct_value, prefix))
            elif kind == "list_value":
                stack.extend((x, f"{prefix}[{i}]") for i, x in enumerate(m.list_value.values))
            continue
        if name == _LIST_VALUE:
            stack.extend((x, f"{prefix}[{i}]") for i, x in enumerate(m.values))
            continue
        for fd, value in m.ListFields():
            path = f"{prefix}.{fd.name}" if prefix else fd.name
            if _is_map(fd):
                value_fd = fd.message_type.fields_by_name["value"]
                for k in value:
                    if isinstance(k, str) and "\x00" in k:
                        return f"{path}[key {show(k)}]"
                    item = value[k]
                    if value_fd.type == FieldDescriptor.TYPE_STRING and "\x00" in item:
                        return f"{path}[{show(k)}]"
                    if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                        stack.append((item, f"{path}[{show(k)}]"))
            elif fd.type == FieldDescriptor.TYPE_STRING:
                if fd.is_repeated:
                    for i, s in enumerate(value):
                        if "\x00" in s:
                            return f"{path}[{i}]"
                elif "\x00" in value:
                    return path
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                if fd.is_repeated:
                    stack.extend((x, f"{path}[{i}]") for i, x in reversed(list(enumerate(value))))
                else:
                    stack.append((value, path))
    return None


def _has_page_token(descriptor: Descriptor) -> bool:
    fd = descriptor.fields_by_name.get("page_token")
    return fd is not None and fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated


def check_request(msg: Message, may_hold_nul: bool, limits: Limits) -> None:
    """The checks every decoded request passes before a servicer sees it.

    Args:
        msg: The decoded request.
        may_hold_nul: False when its wire form has no 0x00 byte (then no string in it holds NUL).
        limits: The page-token limit.

    Raises:
        InvalidArgument: a string holding a NUL character (naming its field path), or an overlong page_token.
    """
    if _has_page_token(msg.DESCRIPTOR):
        token = msg.page_token
        if len(token) > limits.page_token_chars:
            raise InvalidArgument.field(
                "page_token",
                f"is not a token returned by this list: it has {len(token):,} characters, more than the limit of "
                f"{limits.page_token_chars:,} (VDB_MAX_PAGE_TOKEN_CHARS)",
            )
    if may_hold_nul:
        path = _nul_path(msg)
        if path is not None:
            raise InvalidArgument.field(
                path or "request", "must not contain NUL characters (PostgreSQL text cannot hold them)"
            )


# --- before decoding: Structs too large to be parsed at all ------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


@dataclass(frozen=True)
class WireScan:
    """What ``scan_wire`` found in a request's bytes before decoding.

    Attributes:
        oversized: (field path, wire size) of the first ``google.protobuf.Struct`` over the limit, else None.
        may_hold_nul: False when no string field (nor map key, nor string inside a Struct or Value) holds a
            0x00 byte: then no decoded string holds NUL and ``check_request`` need not walk the message.
            Packed numbers (vectors), doubles, booleans and nulls are skipped: their bytes are full of zeros.
    """

    oversized: tuple[str, int] | None
    may_hold_nul: bool


#: Messages nested deeper than this on the wire end the scan (protobuf's own decoder refuses them: its
#: recursion limit is 100), leaving the decision to the decoder and the walk.
SCAN_MAX_DEPTH = 100

_SKIP, _STRING, _MESSAGE = 0, 1, 2


@dataclass(frozen=True)
class _WireField:
    """How the scan treats one length-delimited field of a message (``_wire_fields``)."""

    kind: int  # _STRING: look for 0x00; _MESSAGE: walk its fields; _SKIP: packed numbers, bytes
    name: str
    repeated: bool
    descriptor: Descriptor | None
    struct: bool  # a google.protobuf.Struct: its size is limited


_WIRE_FIELDS: dict[str, dict[int, _WireField]] = {}


def _wire_fields(desc: Descriptor) -> dict[int, _WireField]:
    """Per field number, what the scan does with ``desc``'s length-delimited fields (computed once per type)."""
    table = _WIRE_FIELDS.get(desc.full_name)
    if table is None:
        table = {}
        for fd in desc.fields:
            if fd.type == FieldDescriptor.TYPE_STRING:
                table[fd.number] = _WireField(_STRING, fd.name, fd.is_repeated, None, False)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                mt = fd.message_type
                table[fd.number] = _WireField(_MESSAGE, fd.name, fd.is_repeated, mt, mt.full_name == _STRUCT)
        _WIRE_FIELDS[desc.full_name] = table
    return table


def scan_wire(raw: bytes, descriptor: Descriptor, limit: int) -> WireScan:
    """One pass over ``raw``'s tags and lengths, guided by ``descriptor`` (see ``WireScan``).

    A request holding a Struct of millions of keys (which protobuf would take many seconds to parse, holding the
    GIL) is refused before it is decoded. Messages, Structs included, are walked on the wire, so only strings,
    keys and string values count (a number's eight bytes mostly are zeros: counted, they sent every upload with
    numeric metadata through ``check_request``'s slow walk) -- except a message within the size limit that holds
    no 0x00 byte at all, which can hold neither: it is skipped at the speed of ``bytes.find``. Malformed bytes
    give no oversized Struct and "may hold NUL": decoding them fails next, with its own error.
    """
    found: list[bool] = [False]
    try:
        oversized = _scan(raw, 0, len(raw), descriptor, limit, found, SCAN_MAX_DEPTH)
    except (ValueError, IndexError):
        return WireScan(None, b"\x00" in raw)
    return WireScan(oversized, found[0])


def _scan(
    buf: bytes, pos: int, end: int, desc: Descriptor, limit: int, nul: list[bool], depth: int
) -> tuple[str, int] | None:
    """Scan one message's bytes ``buf[pos:end]``; the path (relative to this message) and size of the first
    oversized Struct, else None; ``nul[0]`` set when a string holds 0x00."""
    if depth <= 0:
        raise ValueError("nested too deeply")
    fields = _wire_fields(desc)
    counts: dict[int, int] = {}
    while pos < end:
        key = buf[pos]  # one byte for field numbers up to 15
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 2:
            length = buf[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            f = fields.get(key >> 3)
            if f is None:
                pass  # packed numbers, bytes, unknown fields: no decoded string
            elif f.kind == _STRING:
                if not nul[0] and buf.find(b"\x00", pos, pos + length) >= 0:
                    nul[0] = True
            else:
                index = 0
                if f.repeated:
                    index = counts.get(key >> 3, 0)
                    counts[key >> 3] = index + 1
                if length > limit:
                    if f.struct:
                        return _path(f, index), length
                elif nul[0] or buf.find(b"\x00", pos, pos + length) < 0:
                    pos += length  # holds no oversized Struct, and no string in it holds 0x00 (or one did)
                    continue
                assert f.descriptor is not None
                inner = _scan(buf, pos, pos + length, f.descriptor, limit, nul, depth - 1)
                if inner is not None:  # paths are only built for the one oversized Struct
                    return f"{_path(f, index)}.{inner[0]}", inner[1]
            pos += length
        elif wire == 0:
            while buf[pos] & 0x80:
                pos += 1
            pos += 1
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("group or invalid wire type")  # not in our protos: the decoder decides
    if pos != end:
        raise ValueError("field runs past its message")
    return None


def _path(f: _WireField, index: int) -> str:
    return f"{f.name}[{index}]" if f.repeated else f.name
