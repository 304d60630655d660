"""Opaque page tokens for keyset pagination.

A token is base64url JSON holding the list's name and the sort key of the last item returned. It is not a
secret and not signed: a forged token can only move the starting point of a list the caller may read anyway.
Decoding is bounded: the interceptor refuses tokens over ``VDB_MAX_PAGE_TOKEN_CHARS`` before they get here,
and a sort key must be a short flat list of strings (without NUL) and 64-bit integers, so whatever a forged
token holds reaches SQL only as values of the types the list's statement binds.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from vdb_grpc.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Most values in a sort key (ours have one or two).
MAX_KEY_PARTS = 4
_INT64 = 2**63


@dataclass(frozen=True)
class PageRequest:
    """A validated page request: how many items, and after which sort key (None = from the start)."""

    size: int
    after: list[Any] | None


def page_request(list_name: str, page_size: int, page_token: str) -> PageRequest:
    """Validate ``page_size``/``page_token`` of a List request (sizes above the max are coerced to it)."""
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return PageRequest(size=size, after=decode_token(list_name, page_token))


def encode_token(list_name: str, key: list[Any]) -> str:
    """Token that continues ``list_name`` after the item with sort key ``key``."""
    raw = json.dumps({"l": list_name, "k": key}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(list_name: str, token: str) -> list[Any] | None:
    """The sort key in ``token`` (None for an empty token); INVALID_ARGUMENT for a token of another list."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
        if not isinstance(data, dict) or data.get("l") != list_name or not isinstance(data.get("k"), list):
            raise ValueError
        key = list(data["k"])
        if len(key) > MAX_KEY_PARTS or not all(_plain(k) for k in key):
            raise ValueError
        return key
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise InvalidArgument.field("page_token", "is not a token returned by this list") from None


def _plain(value: Any) -> bool:
    """A sort-key value a statement can bind: a string without NUL or a 64-bit integer."""
    if isinstance(value, str):
        return "\x00" not in value
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64


def next_token(list_name: str, items: list[Any], size: int, key_of: Any) -> str:
    """Token for the page after ``items`` (fetched with limit size+1); empty when there is no more."""
    if len(items) <= size:
        return ""
    return encode_token(list_name, key_of(items[size - 1]))
