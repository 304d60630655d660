"""Project metadata schemas: compile a JSON Schema given as text, and validate metadata values against it.

Pure (no I/O, no network): ProjectService uses it when a schema is set, the embedding uploads when metadata
arrives. Validation runs on ``jsonschema-rs`` (Rust) with the ``regex`` crate as its regular-expression engine:
``pattern``, ``patternProperties`` and ``propertyNames`` patterns match in linear time (no backtracking), and a
pattern that engine cannot run (look-around, back-references, a repetition count it cannot hold) is refused
when the schema is set. Its validators release the GIL, so worker threads validate while the event loop serves
other calls (docs/limits.md has the measurements behind this choice). Rules:

- The schema is JSON text holding a JSON object (boolean schemas are refused: they are never what a user
  means). ``$schema`` picks the draft (4, 6, 7, 2019-09, 2020-12); without it, Draft 2020-12 applies. An
  unknown ``$schema`` is refused rather than silently validated as another draft.
- ``$ref`` may point inside the schema (``#/$defs/x``, anchors, embedded ``$id`` s) or at the drafts' own
  meta-schemas. Remote references are **never fetched** (that would be a server-side request forgery); a
  ``$ref`` that cannot be resolved locally is an invalid schema.
- ``format`` is an annotation, as JSON Schema 2020-12 specifies: it is not asserted.
- Bounded work (``vdb_grpc.limits.Limits``): the text's size, its nesting depth and the number of subschemas
  it amounts to with every ``$ref`` expanded are limited, so neither compiling nor validating one value can
  take long (``$defs`` whose ``allOf`` references the next level twice double the work per level).
- Metadata that is absent (``None``) violates every schema: a project with a schema requires metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import referencing
import referencing.jsonschema
from jsonschema.protocols import Validator  # type: ignore[import-untyped]
from jsonschema.validators import Draft202012Validator, validator_for  # type: ignore[import-untyped]
from jsonschema_specifications import REGISTRY as META_SCHEMAS  # type: ignore[import-untyped]
from referencing.exceptions import Unresolvable

from vdb_grpc.errors import FailedPrecondition, InvalidArgument
from vdb_grpc.limits import Limits, show

#: Field name used in errors about a schema given in a request.
SCHEMA_FIELD = "project.metadata_schema"
#: Longest error message kept from the validator (its messages quote the offending value, which may be huge).
MESSAGE_LIMIT = 300
#: Size the regex engine may compile one pattern to (bytes): larger ones are refused. 64 KiB admits e.g.
#: ``\p{L}{1,100}`` and refuses ``(a{1,1000}){1,1000}b``, which would still match in linear time but with a
#: constant of a million states per character.
REGEX_SIZE_LIMIT = 64 * 1024
#: Memory of the lazy DFA per pattern (bytes).
REGEX_DFA_LIMIT = 1024 * 1024
DEFAULT_LIMITS = Limits()


def _never_fetch(uri: str) -> Any:
    """jsonschema-rs' retriever: nothing outside the schema and the drafts' meta-schemas is ever downloaded."""
    raise ValueError(f"{uri} is not fetched: references must point inside the schema")


@dataclass(frozen=True)
class SchemaViolation:
    """Why one metadata value does not satisfy a schema.

    Attributes:
        path: JSON path of the offending part of the metadata, ``$`` for the whole value (e.g. ``$.year``,
            ``$.authors[2]``).
        message: What is wrong, e.g. ``'x' is not of type 'integer'``.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"at {self.path}: {self.message}"


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


class MetadataSchema:
    """A compiled, checked JSON Schema. Thread-safe: validation may run in worker threads."""

    def __init__(self, text: str, schema: dict[str, Any], validator: Any) -> None:
        self.text = text
        self.schema = schema
        self._validator = validator

    def violation(self, metadata: Any) -> SchemaViolation | None:
        """The most relevant reason ``metadata`` does not satisfy the schema, or None when it does.

        Args:
            metadata: A decoded JSON value (normally a dict); None means "no metadata".
        """
        if metadata is None:
            return SchemaViolation("$", "metadata is required: the project has a metadata_schema")
        try:
            if self._validator.is_valid(metadata):
                return None
            error = next(iter(self._validator.iter_errors(metadata)), None)
        except (ValueError, RecursionError):  # jsonschema-rs: "Recursion limit reached"
            return SchemaViolation("$", "the schema recurses without end on this value")
        if error is None:  # pragma: no cover - is_valid said there is one
            return None
        return SchemaViolation(json_path(error.instance_path), _clip(error.message))

    def violations(self, items: Iterable[tuple[str, Any]]) -> list[tuple[str, SchemaViolation]]:
        """Check many ``(key, metadata)`` pairs; return ``(key, violation)`` for each one that fails, in order."""
        out = []
        for key, metadata in items:
            v = self.violation(metadata)
            if v is not None:
                out.append((key, v))
        return out


def json_path(parts: Iterable[str | int]) -> str:
    """``["authors", 2]`` → ``$.authors[2]``."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _depth(value: Any) -> int:
    """Nesting of objects/arrays in a decoded JSON value (a scalar has depth 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


class _TooMany(Exception):
    pass


#: Keywords whose subschemas apply to the same value (not to a part of it).
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")


def _in_place_children(contents: Any) -> list[int]:
    if not isinstance(contents, dict):
        return []
    out = [id(x) for k in _IN_PLACE_LISTS if isinstance(contents.get(k), list) for x in contents[k]]
    out += [id(contents[k]) for k in _IN_PLACE_ONE if k in contents]
    deps = contents.get("dependentSchemas")
    if isinstance(deps, dict):
        out += [id(x) for x in deps.values()]
    return out


def _loops_in_place(schema: Any, graph: dict[int, tuple[list[int], list[int]]], by_id: dict[int, Any]) -> bool:
    """True when following ``$ref`` s and in-place applicators from some subschema leads back to it: validating
    would then apply it to the same value again and again."""
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    for start in by_id:
        if start in state:
            continue
        stack: list[tuple[int, list[int]]] = [(start, [])]
        state[start] = 1
        stack[-1] = (start, _in_place_children(by_id[start]) + graph.get(start, ([], []))[1])
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                continue
            nxt = todo.pop()
            if nxt not in by_id:
                continue
            if state.get(nxt) == 1:
                return True
            if nxt not in state:
                state[nxt] = 1
                stack.append((nxt, _in_place_children(by_id[nxt]) + graph.get(nxt, ([], []))[1]))
    return False


def _check_references(cls: type[Validator], schema: dict[str, Any], field: str, limits: Limits) -> None:
    """Resolve every ``$ref``/``$dynamicRef`` of ``schema`` locally and bound the subschemas it expands to.

    Walks the schema as the draft defines its subschemas (so a ``{"$ref": …}`` inside ``const`` or ``enum`` is
    data, not a reference) and follows embedded ``$id`` s the way validation will. Then counts the subschemas
    validation may visit at one value: each subschema counts once plus what its subschemas and references
    count; a reference back into its own chain (recursion, which descends into the value) is unrolled up to
    ``limits.metadata_depth`` times.

    Raises:
        InvalidArgument: an unresolvable reference, or more than ``limits.schema_subschemas`` subschemas.
    """
    specification = referencing.jsonschema.specification_with(
        cls.ID_OF(cls.META_SCHEMA) or "", default=referencing.Specification.OPAQUE
    )
    root = specification.create_resource(schema)
    resolver = META_SCHEMAS.resolver_with_root(root)
    stack = [(resolver, root)]
    #: id of each subschema → (ids of its subschemas, ids of what its references resolve to)
    graph: dict[int, tuple[list[int], list[int]]] = {}
    by_id: dict[int, Any] = {}
    while stack:
        parent, resource = stack.pop()
        current = parent.in_subresource(resource)
        contents = resource.contents
        if isinstance(contents, dict):
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if isinstance(ref, str):
                    try:
                        resolved = current.lookup(ref)
                    except Unresolvable:
                        raise InvalidArgument.field(
                            field,
                            f"{keyword} {show(ref)} cannot be resolved: references must point inside the schema "
                            "(remote schemas are never fetched)",
                        ) from None
                    graph.setdefault(id(contents), ([], []))[1].append(id(resolved.contents))
        subs = list(resource.subresources())
        by_id[id(contents)] = contents
        node = graph.setdefault(id(contents), ([], []))
        # Definitions apply only where a $ref names them: they are no children of the schema holding them.
        defs = {
            id(d)
            for k in ("$defs", "definitions")
            if isinstance(contents, dict) and isinstance(contents.get(k), dict)
            for d in contents[k].values()
        }
        node[0].extend(id(sub.contents) for sub in subs if id(sub.contents) not in defs)
        stack.extend((current, sub) for sub in subs)
    if _loops_in_place(schema, graph, by_id):
        raise InvalidArgument.field(
            field, "is not usable: it refers to itself without end (a $ref cycle that never descends into the value)"
        )
    limit = limits.schema_subschemas
    memo: dict[tuple[int, int], int] = {}
    on_path: set[int] = set()

    def cost(node_id: int, unroll: int) -> int:
        key = (node_id, unroll)
        known = memo.get(key)
        if known is not None:
            return known
        children, refs = graph.get(node_id, ((), ()))
        on_path.add(node_id)
        total = 1
        for child in children:
            total += cost(child, unroll)
            if total > limit:
                raise _TooMany
        for target in refs:
            if target not in graph:  # a meta-schema: validates like any bounded schema
                total += 1
            elif target in on_path:
                total += cost(target, unroll - 1) if unroll > 0 else 1
            else:
                total += cost(target, unroll)
            if total > limit:
                raise _TooMany
        on_path.discard(node_id)
        memo[key] = total
        return total

    try:
        cost(id(schema), limits.metadata_depth)
    except _TooMany:
        raise InvalidArgument.field(
            field,
            f"expands to more than {limit:,} subschemas once its $refs are followed, the limit "
            "(VDB_MAX_SCHEMA_SUBSCHEMAS): validating a value against it would take too long",
        ) from None
    except RecursionError:
        raise InvalidArgument.field(field, "chains too many $refs through each other") from None


def _references_named(cls: type[Validator], schema: dict[str, Any], field: str, limits: Limits) -> None:
    """When jsonschema-rs refused a schema: name an unresolvable reference if that is the reason."""
    try:
        _check_references(cls, schema, field, limits)
    except InvalidArgument as exc:
        if "cannot be resolved" in exc.message:
            raise
    except Exception:  # noqa: S110 - a schema malformed in another way: the validator's own message is reported
        pass


def compile_schema(text: str, field: str = SCHEMA_FIELD, limits: Limits = DEFAULT_LIMITS) -> MetadataSchema:
    """Parse and check a metadata schema given by a client.

    Args:
        text: The schema as JSON text.
        field: The request field named in errors.
        limits: Size, depth and expansion limits.

    Returns:
        The compiled schema.

    Raises:
        InvalidArgument: too large or too deep, not JSON, not an object, an unknown ``$schema``, not a valid
            schema of its draft (the message names the JSON path inside the schema), a pattern the linear-time
            regex engine cannot run, an unresolvable ``$ref``, too many subschemas, or endless recursion.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.schema_bytes:
        raise InvalidArgument.field(
            field, f"has {size:,} bytes, more than the limit of {limits.schema_bytes:,} (VDB_MAX_SCHEMA_BYTES)"
        )
    try:
        schema = json.loads(text)
    except RecursionError:
        schema = None  # nested beyond what the parser follows: refused as too deep below
        depth = limits.schema_depth + 1
    except ValueError as exc:
        raise InvalidArgument.field(field, _clip(f"is not valid JSON: {exc}")) from None
    else:
        depth = _depth(schema)
    if depth > limits.schema_depth:
        raise InvalidArgument.field(
            field, f"nests deeper than the limit of {limits.schema_depth} levels (VDB_MAX_SCHEMA_DEPTH)"
        )
    if not isinstance(schema, dict):
        raise InvalidArgument.field(field, "must be a JSON object (a JSON Schema)")
    dialect = schema.get("$schema")
    if dialect is not None and (not isinstance(dialect, str) or validator_for(schema, default=None) is None):
        raise InvalidArgument.field(
            field,
            f"unknown $schema {show(dialect)}: use a JSON Schema draft 4, 6, 7, 2019-09 or 2020-12 URI, or omit it",
        )
    cls: type[Validator] = validator_for(schema, default=Draft202012Validator)
    try:
        validator = jsonschema_rs.validator_for(
            schema,
            validate_formats=False,
            retriever=_never_fetch,
            pattern_options=jsonschema_rs.RegexOptions(size_limit=REGEX_SIZE_LIMIT, dfa_size_limit=REGEX_DFA_LIMIT),
        )
    except jsonschema_rs.ValidationError as exc:
        _references_named(cls, schema, field, limits)
        raise InvalidArgument.field(
            field, _clip(f"is not a valid JSON Schema: at {json_path(exc.instance_path)}: {exc.message}")
        ) from None
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        _references_named(cls, schema, field, limits)
        raise InvalidArgument.field(field, _clip(f"is not a usable JSON Schema: {exc}")) from None
    _check_references(cls, schema, field, limits)
    compiled = MetadataSchema(text, schema, validator)
    try:
        validator.is_valid({})
    except (ValueError, RecursionError):
        raise InvalidArgument.field(field, "is not usable: it refers to itself without end") from None
    return compiled


def compile_stored_schema(text: str | None, limits: Limits = DEFAULT_LIMITS) -> MetadataSchema | None:
    """Compile a project's stored schema; None when the project has none.

    A stored schema that no longer compiles (e.g. written by the Go service, which did not check schemas) is
    the project's state, not the request's fault.

    Raises:
        FailedPrecondition: the stored schema is not a usable JSON Schema; the message says how to fix it.
    """
    if not text:
        return None
    try:
        return compile_schema(text, field="metadata_schema", limits=limits)
    except InvalidArgument as exc:
        raise FailedPrecondition(
            f"the project's stored metadata_schema is unusable ({exc.message}); set a valid one with UpdateProject"
        ) from None
