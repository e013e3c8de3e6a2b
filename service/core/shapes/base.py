"""What every response shape shares: the base model, the timestamp types, the list envelopes, and the JSON Schemas.

A shape is a pydantic model; `dump()` is the JSON the API answers, and `json_schemas` turns a set of named shapes
into the OpenAPI document's components, so the answer and its documentation are one definition.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import MISSING, BaseModel, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

ItemT = TypeVar("ItemT")


def iso(value: datetime | None) -> str | None:
    """An aware UTC time as ISO 8601 with a `Z`, as every VLQ timestamp is written."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def unix(value: datetime | None) -> int | None:
    """Whole Unix seconds, as OpenAI's objects (batches, files) carry their times."""
    return None if value is None else int(value.timestamp())


Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time"})]
# OpenAI's shapes: Unix seconds, null while the moment has not come (the schema says so for every one).
UnixSeconds = Annotated[datetime | None, PlainSerializer(unix, return_type=int | None),
                        WithJsonSchema({"type": ["integer", "null"], "description": "Unix seconds"})]


class Shape(BaseModel):
    """A response shape. A field that defaults to MISSING is left out of the answer unless given."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True,
                              json_schema_serialization_defaults_required=True)

    def dump(self) -> dict[str, Any]:
        """The answer's JSON, as Python values."""
        return self.model_dump(mode="json")


class ObjectList(Shape, Generic[ItemT]):
    """OpenAI's plain list: `{"object": "list", "data": [...]}`."""

    object: Literal["list"] = "list"
    data: list[ItemT]


class Page(ObjectList[ItemT], Generic[ItemT]):
    """The envelope every paginated list endpoint answers with (service.api.common.page)."""

    has_more: bool
    next_cursor: str | None
    first_id: str | None
    last_id: str | None


class Deleted(Shape):
    """The answer to a DELETE: the id, its object kind, and `deleted: true`."""

    id: str
    deleted: Literal[True] = True


class _Generator(GenerateJsonSchema):
    def field_is_required(self, field: Any, total: bool) -> bool:
        schema = field["schema"]
        if schema.get("type") == "default" and schema.get("default") is MISSING:
            return False  # an optional key of the answer, not a required one with a default
        return super().field_is_required(field, total)


def json_schemas(shapes: Mapping[str, type[BaseModel]], ref_prefix: str = "#/components/schemas/") -> dict[str, Any]:
    """The JSON Schema of each named shape: a named shape inside another is a `$ref` to its name, anything else
    (nested objects, enums) is written in place; pydantic's titles and spelled-out defaults are left out."""
    keys, top = models_json_schema([(shape, "serialization") for shape in shapes.values()],
                                   ref_template="#/$defs/{model}", schema_generator=_Generator)
    defs = top.get("$defs", {})
    def_names = {name: keys[(shape, "serialization")]["$ref"].rsplit("/", 1)[-1] for name, shape in shapes.items()}
    named = {target: name for name, target in def_names.items()}

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = node["$ref"].rsplit("/", 1)[-1]
            rest = {key: value for key, value in node.items() if key != "$ref"}
            if target in named:
                return {"$ref": ref_prefix + named[target], **resolve(rest)}
            return resolve({**defs[target], **rest})
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            if (key, value) in (("additionalProperties", True), ("items", {})):
                continue  # JSON Schema's defaults, which pydantic spells out
            if key in ("properties", "patternProperties"):
                out[key] = {name: resolve(schema) for name, schema in value.items()}
            elif key in ("const", "enum", "default", "examples"):
                out[key] = value  # values, not schemas
            else:
                out[key] = resolve(value)
        return out

    return {name: resolve(defs[def_names[name]]) for name in shapes}
