"""Validating request fields: one message shape for every bad value ({"field": name} in details)."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from service.core import egress
from service.core.errors import ApiError
from service.core.webhook_signing import secret_key

_MISSING = object()


def required_text(fields: dict[str, Any], name: str, *, max_chars: int) -> str:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ApiError(400, "missing_field", f"'{name}' is required.", {"field": name})
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    if len(value) > max_chars:
        raise _invalid(name, f"is {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:  # Postgres text cannot hold it
        raise _invalid(name, "must not contain NUL characters")
    return value


def int_option(fields: dict[str, Any], name: str, *, default: int, low: int, high: int) -> int:
    return _bounded(fields, name, int, default, low, high)


def float_option(fields: dict[str, Any], name: str, *, default: float, low: float, high: float) -> float:
    return _bounded(fields, name, float, default, low, high)


def bool_option(fields: dict[str, Any], name: str, *, default: bool) -> bool:
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "false", "0"}:
        return value.lower() in {"true", "1"}
    raise _invalid(name, "must be true or false")


def json_object_option(fields: dict[str, Any], name: str, *, max_bytes: int) -> dict[str, Any] | None:
    """A JSON object field; multipart forms carry it as a JSON string."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _invalid(name, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise _invalid(name, "must be a JSON object")
    if len(json.dumps(value)) > max_bytes:
        raise _invalid(name, f"is larger than {max_bytes} bytes as JSON")
    return value


def _bounded(fields: dict[str, Any], name: str, kind: type, default: Any, low: Any, high: Any) -> Any:
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool):
        raise _invalid(name, f"must be a number between {low} and {high}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise _invalid(name, f"must be a number between {low} and {high}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise _invalid(name, "must be a whole number")
    if not low <= number <= high:  # also refuses NaN
        raise _invalid(name, f"must be between {low} and {high}")
    return number


def _invalid(name: str, problem: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_field", f"'{name}' {problem}.", {"field": name, **details})


def webhook_url_option(fields: dict[str, Any], name: str, allow_cidrs: Sequence[str]) -> str | None:
    """An http(s) URL that resolves to an address outbound requests may reach (the SSRF guard, at submit time)."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ApiError(400, "invalid_webhook_url", f"'{name}' must be an http(s) URL of at most 2048 characters.",
                       {"field": name})
    try:
        egress.resolve(value, allow_cidrs)
    except egress.EgressDenied as exc:
        code = "webhook_url_forbidden" if exc.code == "forbidden_address" else "invalid_webhook_url"
        raise ApiError(400, code, f"'{name}' is not accepted: {exc}.", {"field": name, "reason": exc.code}) from None
    return value


def webhook_secret_option(fields: dict[str, Any], name: str) -> str | None:
    """A Standard Webhooks secret, `whsec_<base64>`."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        secret_key(value)
    except ValueError as exc:
        raise _invalid(name, str(exc)) from None
    return value


# -- declared fields: one definition validates a field and describes it in the OpenAPI document ---------

@dataclass(frozen=True, kw_only=True)
class Field:
    """One request field: `read` validates it out of the request's fields, `schema` describes it (OpenAPI)."""

    name: str
    description: str = ""
    required: bool = False
    codes: ClassVar[tuple[str, ...]] = ("invalid_field",)  # the error codes `read` can raise

    def read(self, fields: dict[str, Any]) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The value's JSON Schema in a JSON body."""
        raise NotImplementedError

    def form_schema(self) -> dict[str, Any]:
        """The value's JSON Schema in a multipart form or a query string (the same unless it is JSON inside text)."""
        return self.schema()

    def _described(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "description": self.description} if self.description else schema


@dataclass(frozen=True, kw_only=True)
class Text(Field):
    """A string; an optional one may be empty, which reads as absent."""

    max_chars: int
    required: bool = True
    pattern: str | None = None  # a regex the whole value must match
    codes: ClassVar[tuple[str, ...]] = ("missing_field", "invalid_field")

    def read(self, fields: dict[str, Any]) -> str | None:
        if not self.required and fields.get(self.name) in (None, ""):
            return None
        value = required_text(fields, self.name, max_chars=self.max_chars)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _invalid(self.name, f"must match {self.pattern}")
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_chars}
        if self.required:
            schema["minLength"] = 1
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$" if self.required else f"^(?:{self.pattern})?$"
        return self._described(schema)


@dataclass(frozen=True, kw_only=True)
class Int(Field):
    default: int
    low: int
    high: int

    def read(self, fields: dict[str, Any]) -> int:
        return int_option(fields, self.name, default=self.default, low=self.low, high=self.high)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "integer", "minimum": self.low, "maximum": self.high, "default": self.default})


@dataclass(frozen=True, kw_only=True)
class Float(Field):
    default: float
    low: float
    high: float

    def read(self, fields: dict[str, Any]) -> float:
        return float_option(fields, self.name, default=self.default, low=self.low, high=self.high)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "number", "minimum": self.low, "maximum": self.high, "default": self.default})


@dataclass(frozen=True, kw_only=True)
class OptionalNumber(Field):
    """A number in [low, high] (above low if `exclusive_low`); absent, null or empty reads as None."""

    low: float
    high: float
    integer: bool = False
    exclusive_low: bool = False  # e.g. top_p, where 0 would keep no token at all

    def read(self, fields: dict[str, Any]) -> float | None:
        if fields.get(self.name) is None or fields.get(self.name) == "":
            return None
        option = int_option if self.integer else float_option
        value = option(fields, self.name, default=None, low=self.low, high=self.high)  # type: ignore[arg-type]
        if self.exclusive_low and value == self.low:
            raise _invalid(self.name, f"must be above {self.low:g} and at most {self.high:g}")
        return value

    def schema(self) -> dict[str, Any]:
        bound = "exclusiveMinimum" if self.exclusive_low else "minimum"
        kind = "integer" if self.integer else "number"
        return self._described({"type": [kind, "null"], bound: self.low, "maximum": self.high})


@dataclass(frozen=True, kw_only=True)
class Bool(Field):
    default: bool = False

    def read(self, fields: dict[str, Any]) -> bool:
        return bool_option(fields, self.name, default=self.default)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "boolean", "default": self.default})

    def form_schema(self) -> dict[str, Any]:
        # A form's values are text: the words `read` takes.
        return self._described({"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$",
                                "default": str(self.default).lower()})


@dataclass(frozen=True, kw_only=True)
class Choice(Field):
    """One of `choices`; `code` is the error for any other value (e.g. unknown_model, with the choices listed)."""

    choices: Sequence[str]
    default: str | None = None
    code: str = "invalid_field"

    @property
    def codes(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.code,)

    def read(self, fields: dict[str, Any]) -> str | None:
        value = fields.get(self.name)
        if value is None:
            return self.default
        if value not in self.choices:
            if self.code == "invalid_field":
                allowed = self.choices[0] if len(self.choices) == 1 else f"one of {', '.join(self.choices)}"
                raise _invalid(self.name, f"must be {allowed}")
            kind = self.name.replace("_", " ")
            raise ApiError(400, self.code, f"No {kind} named {value!r}.",
                           {self.name: str(value), "available": sorted(self.choices)})
        return value

    def schema(self) -> dict[str, Any]:
        schema = self.form_schema()
        if not self.required:  # JSON's null reads as absent, as `read` does
            schema = {**schema, "type": ["string", "null"], "enum": [*schema["enum"], None]}
        return schema

    def form_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        if self.default is not None:
            schema["default"] = self.default
        return self._described(schema)


@dataclass(frozen=True, kw_only=True)
class JsonObject(Field):
    max_bytes: int

    def read(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        return json_object_option(fields, self.name, max_bytes=self.max_bytes)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": ["object", "null"]})

    def form_schema(self) -> dict[str, Any]:
        return self._described({"type": "string", "contentMediaType": "application/json"})


@dataclass(frozen=True, kw_only=True)
class WebhookUrl(Field):
    allow_cidrs: tuple[str, ...] = ()
    codes: ClassVar[tuple[str, ...]] = ("invalid_webhook_url", "webhook_url_forbidden")

    def read(self, fields: dict[str, Any]) -> str | None:
        return webhook_url_option(fields, self.name, self.allow_cidrs)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "string", "format": "uri", "maxLength": 2048})


@dataclass(frozen=True, kw_only=True)
class WebhookSecret(Field):
    def read(self, fields: dict[str, Any]) -> str | None:
        return webhook_secret_option(fields, self.name)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "string", "pattern": "^whsec_"})


@dataclass(frozen=True)
class Form:
    """The fields one endpoint reads, in one place: the view reads through it and the OpenAPI document shows it."""

    fields: tuple[Field, ...]
    extra_codes: tuple[str, ...] = ()  # errors the view raises beyond its fields' own

    def __getitem__(self, name: str) -> Field:
        return next(field for field in self.fields if field.name == name)

    def __add__(self, other: Form) -> Form:
        return Form(self.fields + other.fields, self.extra_codes + other.extra_codes)

    def read(self, name: str, values: dict[str, Any]) -> Any:
        return self[name].read(values)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([code for field in self.fields for code in field.codes] + list(self.extra_codes)))

    def schema(self, *, form: bool = False) -> dict[str, Any]:
        """The object schema of a body holding these fields (a multipart form's when `form`)."""
        properties = {field.name: field.form_schema() if form else _null_as_absent(field)
                      for field in self.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required = [field.name for field in self.fields if field.required]
        if required:
            schema["required"] = required
        return schema


def _null_as_absent(field: Field) -> dict[str, Any]:
    """A field's JSON schema; an optional field also takes null, which every `read` takes as absent."""
    schema = field.schema()
    if field.required:
        return schema
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if kind is None:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema
