"""Project metadata schemas: compile a JSON Schema given as text, and validate metadata values against it.

Pure (no I/O, no network): ProjectService uses it when a schema is set, the embedding uploads when metadata
arrives. Rules:

- The schema is JSON text holding a JSON object (boolean schemas are refused: they are never what a user
  means). ``$schema`` picks the draft (4, 6, 7, 2019-09, 2020-12); without it, Draft 2020-12 applies. An
  unknown ``$schema`` is refused rather than silently validated as another draft.
- ``$ref`` may point inside the schema (``#/$defs/x``, anchors, embedded ``$id`` s) or at the drafts' own
  meta-schemas. Remote references are **never fetched** (jsonschema's default registry would download them:
  a server-side request forgery); a ``$ref`` that cannot be resolved locally is an invalid schema.
- ``format`` is an annotation, as JSON Schema 2020-12 specifies: it is not asserted.
- Metadata that is absent (``None``) violates every schema: a project with a schema requires metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import referencing
import referencing.jsonschema
from jsonschema import SchemaError  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from jsonschema.protocols import Validator  # type: ignore[import-untyped]
from jsonschema.validators import Draft202012Validator, validator_for  # type: ignore[import-untyped]
from jsonschema_specifications import REGISTRY as META_SCHEMAS  # type: ignore[import-untyped]
from referencing.exceptions import Unresolvable

from vdb_grpc.errors import FailedPrecondition, InvalidArgument

#: Field name used in errors about a schema given in a request.
SCHEMA_FIELD = "project.metadata_schema"
#: Longest error message kept from jsonschema (its messages quote the offending value, which may be huge).
MESSAGE_LIMIT = 300

#: No retrieval function: looking up anything not in the schema itself (or the meta-schemas, which jsonschema
#: adds) raises Unresolvable instead of downloading it.
_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry()


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

    def __init__(self, text: str, schema: dict[str, Any], validator: Validator) -> None:
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
            error = best_match(self._validator.iter_errors(metadata))
        except Unresolvable as exc:  # pragma: no cover - compile_schema resolves every $ref up front
            return SchemaViolation("$", _clip(f"the schema has an unresolvable reference: {exc}"))
        except RecursionError:
            return SchemaViolation("$", "the schema recurses without end on this value")
        if error is None:
            return None
        return SchemaViolation(error.json_path, _clip(error.message))

    def violations(self, items: Iterable[tuple[str, Any]]) -> list[tuple[str, SchemaViolation]]:
        """Check many ``(key, metadata)`` pairs; return ``(key, violation)`` for each one that fails, in order."""
        out = []
        for key, metadata in items:
            v = self.violation(metadata)
            if v is not None:
                out.append((key, v))
        return out


def _check_references(cls: type[Validator], schema: dict[str, Any], field: str) -> None:
    """Resolve every ``$ref``/``$dynamicRef`` of ``schema`` locally; INVALID_ARGUMENT for the first that fails.

    Walks the schema as the draft defines its subschemas (so a ``{"$ref": …}`` inside ``const`` or ``enum`` is
    data, not a reference) and follows embedded ``$id`` s the way validation will.
    """
    specification = referencing.jsonschema.specification_with(
        cls.ID_OF(cls.META_SCHEMA) or "", default=referencing.Specification.OPAQUE
    )
    root = specification.create_resource(schema)
    resolver = META_SCHEMAS.resolver_with_root(root)
    stack = [(resolver, root)]
    while stack:
        parent, resource = stack.pop()
        current = parent.in_subresource(resource)
        contents = resource.contents
        if isinstance(contents, dict):
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if isinstance(ref, str):
                    try:
                        current.lookup(ref)
                    except Unresolvable:
                        raise InvalidArgument.field(
                            field,
                            _clip(
                                f"{keyword} {ref!r} cannot be resolved: references must point inside the schema "
                                "(remote schemas are never fetched)"
                            ),
                        ) from None
        stack.extend((current, sub) for sub in resource.subresources())


def compile_schema(text: str, field: str = SCHEMA_FIELD) -> MetadataSchema:
    """Parse and check a metadata schema given by a client.

    Args:
        text: The schema as JSON text.
        field: The request field named in errors.

    Returns:
        The compiled schema.

    Raises:
        InvalidArgument: not JSON, not an object, an unknown ``$schema``, not a valid schema of its draft (the
            message names the JSON path inside the schema), an unresolvable ``$ref``, or endless recursion.
    """
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument.field(field, _clip(f"is not valid JSON: {exc}")) from None
    if not isinstance(schema, dict):
        raise InvalidArgument.field(field, "must be a JSON object (a JSON Schema)")
    dialect = schema.get("$schema")
    if dialect is not None and (not isinstance(dialect, str) or validator_for(schema, default=None) is None):
        raise InvalidArgument.field(
            field,
            _clip(f"unknown $schema {dialect!r}: use a JSON Schema draft 4, 6, 7, 2019-09 or 2020-12 URI, or omit it"),
        )
    cls: type[Validator] = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidArgument.field(
            field, _clip(f"is not a valid JSON Schema: at {exc.json_path}: {exc.message}")
        ) from None
    _check_references(cls, schema, field)
    validator = cls(schema, registry=_LOCAL_ONLY)
    compiled = MetadataSchema(text, schema, validator)
    try:
        best_match(validator.iter_errors({}))
    except RecursionError:
        raise InvalidArgument.field(field, "is not usable: it refers to itself without end") from None
    return compiled


def compile_stored_schema(text: str | None) -> MetadataSchema | None:
    """Compile a project's stored schema; None when the project has none.

    A stored schema that no longer compiles (e.g. written by the Go service, which did not check schemas) is
    the project's state, not the request's fault.

    Raises:
        FailedPrecondition: the stored schema is not a usable JSON Schema; the message says how to fix it.
    """
    if not text:
        return None
    try:
        return compile_schema(text, field="metadata_schema")
    except InvalidArgument as exc:
        raise FailedPrecondition(
            f"the project's stored metadata_schema is unusable ({exc.message}); set a valid one with UpdateProject"
        ) from None
