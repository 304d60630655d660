"""The pure metadata-schema helpers: compiling a client's JSON Schema and validating metadata against it."""

from __future__ import annotations

import json
import urllib.request

import pytest

from vdb_grpc.errors import FailedPrecondition, InvalidArgument
from vdb_grpc.metadata_schema import SchemaViolation, compile_schema, compile_stored_schema

DRAFT4 = "http://json-schema.org/draft-04/schema#"
DRAFT7 = "http://json-schema.org/draft-07/schema#"
BOOK = {
    "type": "object",
    "properties": {
        "year": {"type": "integer"},
        "authors": {"type": "array", "items": {"$ref": "#/$defs/author"}},
    },
    "required": ["year"],
    "$defs": {"author": {"type": "string", "minLength": 1}},
}


def invalid(text: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        compile_schema(text)
    err = info.value
    assert [v.field for v in err.field_violations] == ["project.metadata_schema"]
    return err.field_violations[0].description


def test_valid_metadata_passes_and_violations_name_path_and_reason():
    schema = compile_schema(json.dumps(BOOK))
    assert schema.violation({"year": 1999, "authors": ["Ann"]}) is None
    assert schema.violation({"year": "1999"}) == SchemaViolation("$.year", '"1999" is not of type "integer"')
    assert schema.violation({"year": 1, "authors": ["a", ""]}) == SchemaViolation(
        "$.authors[1]", '"" is shorter than 1 character'
    )
    assert schema.violation({}) == SchemaViolation("$", '"year" is a required property')
    assert str(schema.violation({"year": None})) == 'at $.year: null is not of type "integer"'


def test_absent_metadata_violates_every_schema():
    schema = compile_schema("{}")
    assert schema.violation({}) is None
    assert schema.violation(None) == SchemaViolation("$", "metadata is required: the project has a metadata_schema")


def test_violations_keeps_order_and_keys():
    schema = compile_schema(json.dumps(BOOK))
    items = [("a", {"year": 1}), ("b", {"year": "x"}), ("c", None), ("d", {"year": 2})]
    assert [(k, v.path) for k, v in schema.violations(items)] == [("b", "$.year"), ("c", "$")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{nope", "is not valid JSON"),
        ("", "is not valid JSON"),
        ("[]", "must be a JSON object"),
        ("true", "must be a JSON object"),
        ('"x"', "must be a JSON object"),
        ('{"$schema": "https://example.org/my-dialect"}', "unknown $schema"),
        ('{"$schema": 7}', "unknown $schema"),
        ('{"type": "nope"}', "is not a valid JSON Schema: at $.type"),
        ('{"properties": {"a": {"minimum": "x"}}}', 'at $.properties.a.minimum: "x" is not of type "number"'),
        ('{"properties": {"a": {"$ref": "#/$defs/missing"}}}', "'#/$defs/missing' cannot be resolved"),
        ('{"$ref": "#"}', "refers to itself without end"),
    ],
)
def test_invalid_schemas_are_refused_with_a_reason(text, expected):
    assert expected in invalid(text)


def test_remote_references_are_never_fetched(monkeypatch):
    def no_network(*args, **kwargs):  # pragma: no cover - failing here is the bug this test guards against
        raise AssertionError("a schema reference was fetched over the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for ref in ("https://example.org/schema.json", "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"):
        assert "never fetched" in invalid(json.dumps({"properties": {"a": {"$ref": ref}}}))


def test_local_references_anchors_and_meta_schemas_resolve():
    nested = {
        "$id": "https://example.org/root",
        "$defs": {"name": {"$id": "name", "type": "string"}, "tag": {"$anchor": "tag", "enum": ["x", "y"]}},
        "properties": {"who": {"$ref": "name"}, "tag": {"$ref": "#tag"}},
    }
    schema = compile_schema(json.dumps(nested))
    assert schema.violation({"who": "Ann", "tag": "x"}) is None
    assert schema.violation({"who": 1}) == SchemaViolation("$.who", '1 is not of type "string"')
    assert schema.violation({"tag": "z"}) is not None
    # a {"$ref": ...} inside const is data, not a reference
    assert compile_schema('{"const": {"$ref": "nowhere"}}').violation({"$ref": "nowhere"}) is None
    # the drafts' own meta-schemas are known locally
    meta = compile_schema('{"properties": {"s": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}')
    assert meta.violation({"s": {"type": "string"}}) is None
    assert meta.violation({"s": {"type": 5}}) is not None


def test_schema_keyword_selects_the_draft():
    legacy = {"$schema": DRAFT4, "properties": {"n": {"minimum": 1, "exclusiveMinimum": True}}}
    assert compile_schema(json.dumps(legacy)).violation({"n": 1}) is not None  # draft 4: boolean exclusiveMinimum
    assert compile_schema(json.dumps(legacy)).violation({"n": 2}) is None
    assert "is not a valid JSON Schema" in invalid(json.dumps({k: v for k, v in legacy.items() if k != "$schema"}))
    draft7 = compile_schema(
        json.dumps({"$schema": DRAFT7, "definitions": {"x": {"type": "string"}}, "$ref": "#/definitions/x"})
    )
    assert draft7.violation("s") is None and draft7.violation({}) is not None


def test_format_is_an_annotation():
    assert compile_schema('{"properties": {"d": {"format": "date"}}}').violation({"d": "not a date"}) is None


def test_long_messages_are_clipped():
    schema = compile_schema('{"properties": {"a": {"type": "integer"}}}')
    v = schema.violation({"a": "x" * 10_000})
    assert v is not None and len(v.message) <= 300 and v.message.endswith("…")


def test_error_field_is_configurable():
    with pytest.raises(InvalidArgument) as info:
        compile_schema("[]", field="metadata_schema")
    assert info.value.field_violations[0].field == "metadata_schema"


def test_compile_stored_schema():
    assert compile_stored_schema(None) is None
    assert compile_stored_schema("") is None
    assert compile_stored_schema(json.dumps(BOOK)).violation({"year": 1}) is None  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition, match="stored metadata_schema is unusable"):
        compile_stored_schema("not json")
