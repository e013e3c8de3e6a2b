"""JSON Schemas of what the API answers, for the OpenAPI document's components.

Each mirrors one `to_dict`-style renderer; the schemathesis test checks every answer against them, so a
renderer that drifts from its schema fails CI.
"""
from __future__ import annotations

from typing import Any

from service.core.models import BatchStatus, JobStatus, Priority
from service.core.webhooks import EVENT_TYPES

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
TIMESTAMP: dict[str, Any] = {"type": "string", "format": "date-time"}
UNIX: dict[str, Any] = {"type": ["integer", "null"], "description": "Unix seconds"}
OBJECT: dict[str, Any] = {"type": "object"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object whose properties are all present (unless `optional`)."""
    return {"type": "object", "properties": properties,
            "required": [name for name in properties if name not in optional]}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def list_of(name: str) -> dict[str, Any]:
    """The envelope every list endpoint answers with (service.api.common.page)."""
    return obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref(name)}, "has_more": BOOLEAN,
                "next_cursor": nullable(STRING), "first_id": nullable(STRING), "last_id": nullable(STRING)})


def deleted(kind: str) -> dict[str, Any]:
    return obj({"id": STRING, "object": {"const": kind}, "deleted": {"const": True}})


ERROR = obj({"error": obj({"code": STRING, "message": STRING, "details": OBJECT}, optional=("details",))})

_TIMINGS = obj({name: nullable(NUMBER) for name in ("queue_ms", "ttft_ms", "inference_ms", "total_ms")})
_USAGE = obj({"prompt_tokens": INTEGER, "completion_tokens": INTEGER, "total_tokens": INTEGER})
_OCR_LINE = obj({"text": STRING, "box": {"type": "array"}, "confidence": NUMBER})
_RESULT = obj({"text": STRING, "json": {}, "lines": {"type": "array", "items": _OCR_LINE}}, optional=("json", "lines"))
_IMAGE = obj({"sha256": STRING, "format": nullable(STRING), "width": nullable(INTEGER), "height": nullable(INTEGER)})

JOB = obj({
    "id": STRING, "object": {"const": "job"}, "status": {"enum": [s.value for s in JobStatus]}, "model": STRING,
    "prompt": STRING, "priority": {"enum": [p.value for p in Priority]}, "max_tokens": INTEGER, "temperature": NUMBER,
    "image": nullable(_IMAGE), "created_at": TIMESTAMP, "started_at": nullable(TIMESTAMP),
    "finished_at": nullable(TIMESTAMP), "preset": nullable(STRING), "result": nullable(_RESULT), "cached": BOOLEAN,
    "cache_of": nullable(STRING), "usage": nullable(_USAGE), "timings": _TIMINGS, "batch_size": nullable(INTEGER),
    "worker": nullable(STRING), "attempts": INTEGER,
    "error": nullable(obj({"code": STRING, "message": nullable(STRING)})),
    "metadata": nullable(OBJECT), "batch_id": nullable(STRING), "custom_id": nullable(STRING),
    "webhook": nullable(obj({"url": STRING})),
})

_COUNTS = obj({"total": INTEGER, "completed": INTEGER, "failed": INTEGER, "cancelled": INTEGER})
_BATCH_STAMPS = ("created_at", "expires_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
                 "expired_at", "cancelling_at", "cancelled_at")
BATCH = obj({
    "id": STRING, "object": {"const": "batch"}, "endpoint": STRING, "errors": nullable(OBJECT),
    "input_file_id": nullable(STRING), "completion_window": STRING, "status": {"enum": [s.value for s in BatchStatus]},
    "output_file_id": nullable(STRING), "error_file_id": nullable(STRING), **{stamp: UNIX for stamp in _BATCH_STAMPS},
    "request_counts": _COUNTS, "metadata": nullable(OBJECT), "priority": {"enum": [p.value for p in Priority]},
    "webhook": nullable(obj({"url": STRING})),
})

FILE = obj({"id": STRING, "object": {"const": "file"}, "bytes": INTEGER, "created_at": UNIX, "filename": STRING,
            "purpose": STRING, "status": STRING})

WEBHOOK_ENDPOINT = obj({
    "id": STRING, "object": {"const": "webhook_endpoint"}, "url": STRING,
    "events": nullable({"type": "array", "items": {"enum": list(EVENT_TYPES)}}), "description": nullable(STRING),
    "status": {"enum": ["active", "disabled"]}, "disabled_reason": nullable(STRING), "created_at": TIMESTAMP,
    "disabled_at": nullable(TIMESTAMP),
    "secret": {"type": "string", "description": "Only in the answer that created the endpoint."},
}, optional=("secret",))

_ATTEMPT = obj({"attempt": INTEGER, "status_code": nullable(INTEGER), "error": nullable(STRING), "latency_ms": NUMBER,
                "response_body": nullable(STRING), "next_attempt_at": nullable(TIMESTAMP), "at": TIMESTAMP})
WEBHOOK_DELIVERY = obj({
    "id": STRING, "object": {"const": "webhook_delivery"}, "event_type": {"enum": list(EVENT_TYPES)},
    "subject_id": STRING, "endpoint_id": nullable(STRING), "url": STRING,
    "status": {"enum": ["pending", "succeeded", "failed", "cancelled"]}, "attempts": INTEGER,
    "next_attempt_at": nullable(TIMESTAMP), "last_status_code": nullable(INTEGER), "last_error": nullable(STRING),
    "created_at": TIMESTAMP, "finished_at": nullable(TIMESTAMP), "log": {"type": "array", "items": _ATTEMPT},
})

HEALTH = obj({"status": {"const": "ok"}})
READY = obj({"status": {"enum": ["ready", "not_ready"]}, "missing": {"type": "array", "items": STRING},
             "checks": OBJECT, "models": {"type": "array", "items": STRING}, "workers": {"type": "array"}})

API_KEY = obj({
    "id": STRING, "object": {"const": "api_key"}, "name": STRING, "tenant": STRING, "admin": BOOLEAN,
    "prefix": STRING, "rate_limit_rps": nullable(NUMBER), "max_queued_jobs": nullable(INTEGER),
    "created_at": TIMESTAMP, "last_used_at": nullable(TIMESTAMP), "revoked_at": nullable(TIMESTAMP),
    "key": {"type": "string", "description": "The secret: only in the answer that created the key."},
}, optional=("key",))

PRESET = obj({"object": {"const": "preset"}, "name": STRING, "prompt": nullable(STRING), "model": nullable(STRING),
              "max_tokens": nullable(INTEGER), "schema": nullable(OBJECT), "labels": {"type": "array"},
              "ground_with_ocr": BOOLEAN, "max_pixels": nullable(INTEGER)})

# The compatible API families (README "Compatible APIs"): their answers and their own error shapes.
OPENAI_ERROR = obj({"error": obj({"message": STRING, "type": STRING, "param": nullable(STRING),
                                  "code": nullable(STRING)})})
CHAT_COMPLETION = obj({
    "id": STRING, "object": {"const": "chat.completion"}, "created": INTEGER, "model": STRING,
    "choices": {"type": "array", "items": obj({"index": INTEGER, "message": obj({"role": STRING,
                                                                                  "content": nullable(STRING)}),
                                               "finish_reason": nullable(STRING)}, optional=("message",))},
    "usage": OBJECT,
}, optional=("usage",))
MODEL = obj({"id": STRING, "object": {"const": "model"}, "created": INTEGER, "owned_by": STRING, "status": STRING})
MODEL_LIST = obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}})
SIMPLE_CHAT = obj({"code": INTEGER, "message": STRING, "data": nullable(obj({
    "response": STRING, "token_usage": _USAGE, "inference_time_ms": nullable(NUMBER)}))})
SIMPLE_HEALTH = obj({"status": {"enum": ["ok", "loading", "unavailable"]}, "model": STRING, "multimodal": BOOLEAN,
                     "cpu_optimized": BOOLEAN, "timestamp": STRING})
GOOGLE_ERROR = obj({"error": obj({"code": INTEGER, "message": STRING, "status": STRING})})
GENERATE_CONTENT = obj({
    "candidates": {"type": "array", "items": obj({"content": obj({"parts": {"type": "array"}, "role": STRING}),
                                                  "finishReason": STRING, "index": INTEGER})},
    "usageMetadata": obj({"promptTokenCount": INTEGER, "candidatesTokenCount": INTEGER, "totalTokenCount": INTEGER}),
    "modelVersion": STRING, "responseId": STRING,
})
OPENAI_HEALTH = obj({"status": {"enum": ["healthy", "unhealthy"]}, "missing": {"type": "array", "items": STRING}},
                    optional=("missing",))

COMPONENTS: dict[str, dict[str, Any]] = {
    "Error": ERROR, "Job": JOB, "JobList": list_of("Job"), "Batch": BATCH, "BatchList": list_of("Batch"),
    "File": FILE, "FileList": list_of("File"), "FileDeleted": deleted("file"),
    "WebhookEndpoint": WEBHOOK_ENDPOINT, "WebhookEndpointList": list_of("WebhookEndpoint"),
    "WebhookEndpointDeleted": deleted("webhook_endpoint"), "WebhookDelivery": WEBHOOK_DELIVERY,
    "WebhookDeliveryList": list_of("WebhookDelivery"), "Health": HEALTH, "Readiness": READY,
    "ApiKey": API_KEY, "ApiKeyList": list_of("ApiKey"), "Preset": PRESET,
    "PresetList": obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref("Preset")}}),
    "OpenAIError": OPENAI_ERROR, "ChatCompletion": CHAT_COMPLETION, "Model": MODEL, "ModelList": MODEL_LIST,
    "OpenAIHealth": OPENAI_HEALTH, "SimpleChatAnswer": SIMPLE_CHAT, "SimpleChatHealth": SIMPLE_HEALTH,
    "GoogleError": GOOGLE_ERROR, "GenerateContentResponse": GENERATE_CONTENT,
}
