"""The OpenAPI 3.1 document, built from the app itself.

Paths and methods come from Flask's url_map, so no route can be left out. Each view says what it takes
and answers with `@operation(...)`: its body and query are the same pydantic models (service.core.validation)
the view reads and validates through, so the document's request schemas are the validators' own definitions;
its answers name response shapes (service.core.shapes), and its errors are `ErrorCode`s.

A new endpoint joins the document with one decorator line:

    @bp.post("/v1/chat/completions")
    @operation("Chat completion", body=chat_model, responses={200: "ChatCompletion"})
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from werkzeug.routing import Rule

from service.api.context import get_settings
from service.core.config import Settings
from service.core.errors import ErrorCode
from service.core.shapes import components
from service.core.validation import RequestModel, error_codes, field_schema, object_schema

F = TypeVar("F", bound=Callable[..., Any])
# A request shape: a model, or a function that builds it from the Settings (bounds, models, presets).
Shape = type[RequestModel] | Callable[[Settings], type[RequestModel]]

JSON = "application/json"
MULTIPART = "multipart/form-data"
# Any request can meet a bug, a database that is down, or a value the database refuses.
_ALWAYS = ("internal_error", "database_unavailable", "bad_request")
_BODY = ("invalid_json", "unsupported_media_type", "request_too_large", "bad_request")
# Any request that needs a key (every view but the @public ones, service.api.auth) can be refused for it.
_AUTH = ("unauthorized", "rate_limited")
_PATH_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {}  # e.g. bearerAuth, registered by the module that checks it


@dataclass(frozen=True)
class Operation:
    """What one view takes and answers, for the document."""

    summary: str
    responses: Mapping[int, str | dict[str, Any]]  # status -> a shape's name (service.core.shapes), or a response
    body: Shape | Mapping[str, Shape] | None = None  # one shape for every media type, or one each
    media: tuple[str, ...] = (JSON,)
    query: Shape | None = None
    errors: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()  # request headers, e.g. Idempotency-Key
    tags: tuple[str, ...] = ()
    security: tuple[str, ...] | None = None  # None: the document's default (an API key), or none for a @public view
    # A compatible API family answers errors in its own shape: that component, for every error status.
    error_schema: str | None = None
    # OpenAPI links from the first 2xx answer: {name: (operationId, path parameter)} filled with the answer's `id`.
    links: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the operation object as is


def operation(summary: str, **spec: Any) -> Callable[[F], F]:
    """Document a view (put it under the route decorator); see `Operation` for the arguments."""
    def decorate(view: F) -> F:
        view.__openapi__ = Operation(summary=summary, **spec)  # type: ignore[attr-defined]
        return view
    return decorate


def security_scheme(name: str, scheme: dict[str, Any]) -> None:
    """Add a security scheme (e.g. bearerAuth) that operations then require by default."""
    _SECURITY_SCHEMES[name] = scheme


def text_response(description: str, *media_types: str) -> dict[str, Any]:
    """A response object for an answer that is not JSON (metrics, CSV, file content)."""
    return {"description": description, "content": {media: {"schema": {"type": "string"}} for media in media_types}}


HEADERS = {
    "Idempotency-Key": {"schema": {"type": "string", "maxLength": 255},
                        "description": "Retries with the same key and request return the first answer."},
}


def document(app: Flask) -> dict[str, Any]:
    """The whole API as an OpenAPI 3.1 document, for this app's settings (models, limits, presets)."""
    settings = get_settings(app)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        spec: Operation | None = getattr(view, "__openapi__", None)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            public = getattr(view, "vlq_public", False)  # set by service.api.auth.public
            optional = getattr(view, "vlq_key_optional", False)  # and by service.api.auth.key_optional
            paths.setdefault(openapi_path(rule), {})[method.lower()] = _operation(rule, spec, settings, public,
                                                                                  optional)
    schemas = {**components(), **_error_schemas()}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "VLQ", "version": "1", "description": "Batch vision-language jobs on Qwen3-VL + OpenVINO."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if _SECURITY_SCHEMES:
        doc["components"]["securitySchemes"] = dict(_SECURITY_SCHEMES)
        doc["security"] = [{name: []} for name in _SECURITY_SCHEMES]
    return doc


def openapi_path(rule: Rule) -> str:
    return _PATH_PARAM.sub(r"{\1}", rule.rule)


def _model(shape: Shape, settings: Settings) -> type[RequestModel]:
    return shape if isinstance(shape, type) else shape(settings)


def _operation(rule: Rule, spec: Operation | None, settings: Settings, public: bool,
               key_optional: bool = False) -> dict[str, Any]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in _PATH_PARAM.findall(rule.rule)]
    if spec is None:  # still listed, so the route is known; test_openapi.py fails until it is documented
        return {"operationId": rule.endpoint, "parameters": params,
                "responses": {"default": {"description": "Undocumented."}}}
    codes = list(spec.errors) + list(_ALWAYS) + ([] if public and not key_optional else list(_AUTH))
    if params:
        codes.append("not_found")
    result: dict[str, Any] = {"operationId": rule.endpoint, "summary": spec.summary}
    if spec.tags:
        result["tags"] = list(spec.tags)
    if spec.query is not None:
        query = _model(spec.query, settings)
        codes += error_codes(query)
        params += [{"name": name, "in": "query", "required": info.is_required(),
                    "schema": field_schema(info, form=True)} for name, info in query.model_fields.items()]
    params += [{"name": name, "in": "header", "required": False, **HEADERS[name]} for name in spec.headers]
    if params:
        result["parameters"] = params
    if spec.body is not None:
        bodies = spec.body if isinstance(spec.body, Mapping) else {media: spec.body for media in spec.media}
        content = {}
        for media, shape in bodies.items():
            body = _model(shape, settings)
            codes += list(error_codes(body)) + list(_BODY)
            content[media] = {"schema": object_schema(body, form=media != JSON)}
        result["requestBody"] = {"required": True, "content": content}
    result["responses"] = {str(status): _response(answer) for status, answer in spec.responses.items()}
    if spec.links:
        success = result["responses"][str(min(spec.responses))]
        success["links"] = {name: {"operationId": target, "parameters": {param: "$response.body#/id"}}
                            for name, (target, param) in spec.links.items()}
    for status, response in _error_responses(codes, spec.error_schema).items():
        result["responses"].setdefault(status, response)  # a view's own answer for a status wins (/readyz's 503)
    security = () if public else spec.security
    if security is not None:
        result["security"] = [{name: []} for name in security]
    if key_optional:  # no key, or one (which is then checked)
        result["security"] = [{}, *({name: []} for name in _SECURITY_SCHEMES)]
    result.update(spec.extra)
    return result


def ref(name: str) -> dict[str, Any]:
    """A reference to a component: a response shape's name, or `Error.<code>`."""
    return {"$ref": f"#/components/schemas/{name}"}


def _response(answer: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(answer, dict):
        return answer
    if answer not in components():
        raise KeyError(f"no response shape named {answer!r} in service.core.shapes.COMPONENTS")
    return {"description": answer, "content": {JSON: {"schema": ref(answer)}}}


def _error_responses(codes: list[str], family_schema: str | None = None) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ErrorCode(code).status, []).append(code)
    responses = {}
    for status, group in sorted(by_status.items()):
        refs = [ref(family_schema)] if family_schema else [ref(f"Error.{code}") for code in group]
        responses[str(status)] = {"description": ", ".join(group),
                                  "content": {JSON: {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}}}
    return responses


def _error_schemas() -> dict[str, Any]:
    """One schema per error code: the shared Error body with that code."""
    return {
        f"Error.{code}": {"allOf": [ref("Error")], "description": f"HTTP {code.status}: {code.when}",
                          "properties": {"error": {"properties": {"code": {"const": code.value}}}}}
        for code in ErrorCode if not code.job
    }
