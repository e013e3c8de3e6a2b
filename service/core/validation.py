"""Request shapes as pydantic models: one model per shape validates a request and describes it for OpenAPI.

A field's type carries a `Spec` (pydantic metadata): `read` checks the raw value with VLQ's own messages and
codes, `schema` / `form_schema` describe it in a JSON body / a multipart form or query string (where every value
is text). `parse` turns pydantic's ValidationError into the one ApiError a client sees; `object_schema` and
`error_codes` give the OpenAPI document the same model's request schema and the error codes it can raise.

    class KeySpec(RequestModel):
        name: Annotated[str, Text(max_chars=100)]
        admin: Annotated[bool, Bool()] = False
"""
from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined, core_schema

from service.core import egress, json_input
from service.core.errors import ApiError, ErrorCode
from service.core.webhook_signing import secret_key

if TYPE_CHECKING:
    from service.core.config import Settings

M = TypeVar("M", bound="RequestModel")
T = TypeVar("T")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class Spec:
    """One field's rules: `read` validates its raw value (raising ApiError), `schema` describes it (OpenAPI)."""

    codes: ClassVar[tuple[str, ...]] = ("invalid_field",)  # the error codes `read` can raise
    blank: ClassVar[bool] = False  # an empty string reads as absent (the default applies)

    def read(self, value: Any, name: str) -> Any:
        raise NotImplementedError

    def missing(self, name: str) -> ApiError:
        """The error for a required field that is absent (or null, or blank)."""
        return ApiError(ErrorCode.MISSING_FIELD, f"'{name}' is required.", {"field": name})

    def schema(self, required: bool) -> dict[str, Any]:
        """The value's JSON Schema in a JSON body."""
        raise NotImplementedError

    def form_schema(self, required: bool) -> dict[str, Any]:
        """The value's JSON Schema in a multipart form or a query string (the same unless it is JSON inside text)."""
        return self.schema(required)

    def shown_default(self, default: Any, form: bool) -> Any:
        return default

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(self._validate)

    def _validate(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        try:
            return self.read(value, info.field_name or "")
        except ApiError as error:
            raise _carrying(error) from None


class RequestModel(BaseModel):
    """A request shape. null reads as absent everywhere (the default applies), "" too where the type says so."""

    model_config = ConfigDict(frozen=True)
    extra_codes: ClassVar[tuple[str, ...]] = ()  # errors its consumer raises beyond its fields' own

    @classmethod
    def prefill(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Fill values in before the fields are read (e.g. from a preset); the raw values as they came by default."""
        return values

    @model_validator(mode="before")
    @classmethod
    def _present(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        try:
            values = cls.prefill(dict(data))
        except ApiError as error:
            raise _carrying(error) from None
        return {name: value for name, value in values.items() if not _absent(cls.model_fields.get(name), value)}


def _absent(info: FieldInfo | None, value: Any) -> bool:
    return value is None or (info is not None and value == "" and spec_of(info).blank)


def _carrying(error: ApiError) -> PydanticCustomError:
    return PydanticCustomError(error.code, "{message}", {"message": error.message, "api_error": error})


def parse(model: type[M], values: Mapping[str, Any]) -> M:
    """`values` read into `model`; the first bad field is the ApiError raised, as every endpoint renders it."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise api_error(model, exc) from None


def api_error(model: type[RequestModel], exc: ValidationError) -> ApiError:
    """The ApiError for pydantic's first error: the one a Spec raised, or a missing field's."""
    first = exc.errors()[0]
    carried = (first.get("ctx") or {}).get("api_error")
    if isinstance(carried, ApiError):
        return carried
    name = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing" and name in model.model_fields:
        return spec_of(model.model_fields[name]).missing(name)
    return ApiError(ErrorCode.INVALID_FIELD, f"'{name}' {first['msg']}.", {"field": name})


def combine(name: str, *parts: type[RequestModel]) -> type[RequestModel]:
    """A model with the fields of `parts`, in the order given (pydantic orders a base's fields by reversed MRO)."""
    return type(name, tuple(reversed(parts)), {"__module__": parts[0].__module__})


def spec_of(info: FieldInfo) -> Spec:
    return next(item for item in info.metadata if isinstance(item, Spec))


def error_codes(model: type[RequestModel]) -> tuple[str, ...]:
    """Every error code reading `model` can raise: its fields' own, then its parts' extra_codes."""
    found = [code for info in model.model_fields.values() for code in spec_of(info).codes]
    found += [code for klass in reversed(model.__mro__) for code in vars(klass).get("extra_codes", ())]
    return tuple(dict.fromkeys(found))


def object_schema(model: type[RequestModel], *, form: bool = False) -> dict[str, Any]:
    """The JSON Schema of a body (a multipart form's when `form`) holding `model`'s fields."""
    properties = {name: field_schema(info, form=form) for name, info in model.model_fields.items()}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [name for name, info in model.model_fields.items() if info.is_required()]
    if required:
        schema["required"] = required
    return schema


def field_schema(info: FieldInfo, *, form: bool = False) -> dict[str, Any]:
    """One field's JSON Schema; in JSON an optional field also takes null, which reads as absent."""
    spec, required = spec_of(info), info.is_required()
    schema = spec.form_schema(required) if form else spec.schema(required)
    if info.default is not None and info.default is not PydanticUndefined:
        schema["default"] = spec.shown_default(info.default, form)
    if info.description:
        schema["description"] = info.description
    if form or required:
        return schema
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if kind is None:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def per_settings(build: Callable[[Settings], T]) -> Callable[[Settings], T]:
    """`build(settings)`, built once per Settings object (Settings holds mappings, so it cannot be a cache key)."""
    built: dict[int, tuple[Settings, T]] = {}  # id -> (the Settings, kept so its id is not reused, what was built)
    lock = threading.Lock()

    @functools.wraps(build)
    def get(settings: Settings) -> T:
        with lock:
            hit = built.get(id(settings))
            if hit is None or hit[0] is not settings:
                if len(built) >= 32:  # tests build many apps; a server, one
                    built.pop(next(iter(built)))
                hit = built[id(settings)] = (settings, build(settings))
            return hit[1]

    return get


def read_json(value: Any, name: str, max_depth: int, error: Callable[[str], ApiError] | None = None) -> Any:
    """A field's value: JSON text (a form's) parsed, then checked as a JSON body is (depth, unpaired surrogates,
    non-finite numbers); `error(problem)` builds the ApiError (default: invalid_field naming the field)."""
    error = error or functools.partial(invalid, name)
    if isinstance(value, str):
        try:
            value = json_input.loads(value, max_depth)
        except json_input.TooDeep as exc:
            raise error(str(exc)) from None
        except ValueError:
            raise error("is not valid JSON") from None
    found = json_input.fault(value, max_depth)
    if found is not None:
        raise error(f"{found.problem} (at {found.path})" if found.path else found.problem)
    return value


# -- the field types -----------------------------------------------------------------------------

def invalid(name: str, problem: str, **details: Any) -> ApiError:
    return ApiError(ErrorCode.INVALID_FIELD, f"'{name}' {problem}.", {"field": name, **details})


@dataclass(frozen=True, kw_only=True)
class Text(Spec):
    """A string without NUL; an optional one may be empty, which reads as absent."""

    max_chars: int
    pattern: str | None = None  # a regex the whole value must match
    codes: ClassVar[tuple[str, ...]] = ("missing_field", "invalid_field")
    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> str:
        if isinstance(value, str) and not value.strip():
            raise self.missing(name)
        if not isinstance(value, str):
            raise invalid(name, "must be a string")
        if len(value) > self.max_chars:
            raise invalid(name, f"is {len(value)} characters; the limit is {self.max_chars}")
        if "\x00" in value:  # Postgres text cannot hold it
            raise invalid(name, "must not contain NUL characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise invalid(name, f"must match {self.pattern}")
        return value

    def schema(self, required: bool) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_chars}
        if required:
            schema["minLength"] = 1
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$" if required else f"^(?:{self.pattern})?$"
        return schema


@dataclass(frozen=True, kw_only=True)
class Number(Spec):
    """A number in [low, high]: an int if `integer`; numeric text too (forms); never a boolean."""

    low: float
    high: float
    integer: bool = False

    def read(self, value: Any, name: str) -> float:
        kind = int if self.integer else float
        if isinstance(value, bool):
            raise invalid(name, f"must be a number between {self.low} and {self.high}")
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e400 is inf, which int() refuses
            raise invalid(name, f"must be a number between {self.low} and {self.high}") from None
        if self.integer and isinstance(value, float) and not value.is_integer():
            raise invalid(name, "must be a whole number")
        if not self.low <= number <= self.high:  # also refuses NaN
            raise invalid(name, f"must be between {self.low} and {self.high}")
        return number

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "integer" if self.integer else "number", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True, kw_only=True)
class OptionalNumber(Number):
    """A number that may be left out (absent, null or empty: None), e.g. a limit that defaults elsewhere."""

    exclusive_low: bool = False  # e.g. top_p, where 0 would keep no token at all
    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> float:
        number = super().read(value, name)
        if self.exclusive_low and number == self.low:
            raise invalid(name, f"must be above {self.low:g} and at most {self.high:g}")
        return number

    def schema(self, required: bool) -> dict[str, Any]:
        bound = "exclusiveMinimum" if self.exclusive_low else "minimum"
        return {"type": ["integer" if self.integer else "number", "null"], bound: self.low, "maximum": self.high}


@dataclass(frozen=True, kw_only=True)
class Bool(Spec):
    """true or false; a form's text says true/false or 1/0."""

    _WORDS: ClassVar[dict[str, bool]] = {"true": True, "1": True, "false": False, "0": False}

    def read(self, value: Any, name: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in self._WORDS:
            return self._WORDS[value.lower()]
        raise invalid(name, "must be true or false")

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "boolean"}

    def form_schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"}

    def shown_default(self, default: Any, form: bool) -> Any:
        return str(default).lower() if form else default


@dataclass(frozen=True, kw_only=True)
class Choice(Spec):
    """One of `choices`; `code` is the error for any other value (e.g. unknown_model, with the choices listed)."""

    choices: Sequence[str]
    code: str = "invalid_field"

    @property
    def codes(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.code,)

    def read(self, value: Any, name: str) -> str:
        if value in self.choices:
            return value
        if self.code == "invalid_field":
            allowed = self.choices[0] if len(self.choices) == 1 else f"one of {', '.join(self.choices)}"
            raise invalid(name, f"must be {allowed}")
        kind = name.replace("_", " ")
        raise ApiError(ErrorCode(self.code), f"No {kind} named {value!r}.",
                       {name: str(value), "available": sorted(self.choices)})

    def schema(self, required: bool) -> dict[str, Any]:
        if required:
            return self.form_schema(required)
        return {"type": ["string", "null"], "enum": [*self.choices, None]}  # null reads as absent

    def form_schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices)}


@dataclass(frozen=True, kw_only=True)
class JsonObject(Spec):
    """A JSON object; multipart forms carry it as JSON text. Checked as a JSON body is (json_input)."""

    max_bytes: int
    max_depth: int = json_input.MAX_DEPTH

    def read(self, value: Any, name: str) -> dict[str, Any]:
        value = read_json(value, name, self.max_depth)
        if not isinstance(value, dict):
            raise invalid(name, "must be a JSON object")
        if len(json.dumps(value)) > self.max_bytes:
            raise invalid(name, f"is larger than {self.max_bytes} bytes as JSON")
        return value

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": ["object", "null"]}

    def form_schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "contentMediaType": "application/json"}


@dataclass(frozen=True, kw_only=True)
class WebhookUrl(Spec):
    """An http(s) URL that resolves to an address outbound requests may reach (the SSRF guard, at submit time)."""

    allow_cidrs: tuple[str, ...] = ()
    codes: ClassVar[tuple[str, ...]] = ("invalid_webhook_url", "webhook_url_forbidden")
    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or len(value) > 2048:
            raise ApiError(ErrorCode.INVALID_WEBHOOK_URL,
                           f"'{name}' must be an http(s) URL of at most 2048 characters.",
                           {"field": name})
        try:
            egress.resolve(value, self.allow_cidrs)
        except egress.EgressDenied as exc:
            code = "webhook_url_forbidden" if exc.code == "forbidden_address" else "invalid_webhook_url"
            raise ApiError(ErrorCode(code), f"'{name}' is not accepted: {exc}.",
                           {"field": name, "reason": exc.code}) from None
        return value

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "format": "uri", "maxLength": 2048}


@dataclass(frozen=True, kw_only=True)
class WebhookSecret(Spec):
    """A Standard Webhooks secret, `whsec_<base64>`."""

    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> str:
        try:
            secret_key(value)
        except ValueError as exc:
            raise invalid(name, str(exc)) from None
        return value

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "pattern": "^whsec_"}


@dataclass(frozen=True, kw_only=True)
class Upload(Spec):
    """An uploaded file (multipart), kept as the framework's file object for the view to stream."""

    codes: ClassVar[tuple[str, ...]] = ("missing_field", "invalid_field")
    missing_message: str = "'{name}' is required."
    max_name_chars: int = 255  # the file name is stored (File.filename is 255 characters)

    def read(self, value: Any, name: str) -> Any:
        if not hasattr(value, "read"):  # a form's text under the file's name is no file
            raise self.missing(name)
        filename = getattr(value, "filename", None) or ""
        if len(filename) > self.max_name_chars:
            raise invalid(name, f"has a file name of {len(filename)} characters; the limit is {self.max_name_chars}")
        # Control characters (NUL, CR, LF, ...) are refused, not cleaned: Postgres cannot store NUL, and a name
        # is shown back (downloads' Content-Disposition, listings) exactly as it was given.
        if _CONTROL.search(filename) or json_input.has_surrogate(filename):
            raise invalid(name, "has a file name with control characters")
        return value

    def missing(self, name: str) -> ApiError:
        return ApiError(ErrorCode.MISSING_FIELD, self.missing_message.format(name=name), {"field": name})

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}
