"""One pydantic model per response shape: it renders the row (`JobOut.from_row(job).dump()`), and the OpenAPI
document's components are generated from it (`components()`), so an answer cannot drift from its documentation.

The component names are the document's (and the schemathesis test's); `operation(responses={200: "Job"})` names one.
"""
from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from service.core.shapes.base import Deleted, ObjectList, Page, Shape, Timestamp, UnixSeconds, iso, json_schemas, unix
from service.core.shapes.compat import (
    BatchRequestOutput,
    ChatCompletionChunk,
    ChatCompletionOut,
    ChatUsage,
    CountTokensResponse,
    GenerateContentResponse,
    GoogleErrorOut,
    GoogleModel,
    GoogleModelList,
    ModelList,
    ModelOut,
    OpenAIErrorOut,
    OpenAIHealthOut,
    OpenAIWebhookEvent,
    ResponseOut,
    SimpleChatAnswer,
    SimpleChatHealth,
)
from service.core.shapes.resources import (
    ApiKeyOut,
    BatchOut,
    BatchUsage,
    ErrorOut,
    EventType,
    FileDeleted,
    FileOut,
    HealthOut,
    JobOut,
    ModelWarning,
    PresetOut,
    ReadinessOut,
    RequestCounts,
    Timings,
    Usage,
    WebhookDeliveryOut,
    WebhookEndpointDeleted,
    WebhookEndpointOut,
    WebhookEvent,
)

COMPONENTS: dict[str, type[BaseModel]] = {
    "Error": ErrorOut, "Job": JobOut, "JobList": Page[JobOut], "Batch": BatchOut, "BatchList": Page[BatchOut],
    "File": FileOut, "FileList": Page[FileOut], "FileDeleted": FileDeleted,
    "WebhookEndpoint": WebhookEndpointOut, "WebhookEndpointList": Page[WebhookEndpointOut],
    "WebhookEndpointDeleted": WebhookEndpointDeleted, "WebhookDelivery": WebhookDeliveryOut,
    "WebhookDeliveryList": Page[WebhookDeliveryOut], "WebhookEvent": WebhookEvent,
    "Health": HealthOut, "Readiness": ReadinessOut,
    "ApiKey": ApiKeyOut, "ApiKeyList": Page[ApiKeyOut], "Preset": PresetOut, "PresetList": ObjectList[PresetOut],
    "OpenAIError": OpenAIErrorOut, "ChatCompletion": ChatCompletionOut, "ChatCompletionChunk": ChatCompletionChunk,
    "BatchRequestOutput": BatchRequestOutput, "Response": ResponseOut, "OpenAIWebhookEvent": OpenAIWebhookEvent,
    "Model": ModelOut, "ModelList": ModelList,
    "OpenAIHealth": OpenAIHealthOut, "SimpleChatAnswer": SimpleChatAnswer, "SimpleChatHealth": SimpleChatHealth,
    "GoogleError": GoogleErrorOut, "GenerateContentResponse": GenerateContentResponse,
    "CountTokensResponse": CountTokensResponse, "GoogleModel": GoogleModel, "GoogleModelList": GoogleModelList,
}


@cache
def components() -> dict[str, Any]:
    """The JSON Schema of every shape in COMPONENTS, under its name, for the OpenAPI document."""
    return json_schemas(COMPONENTS)


__all__ = [
    "COMPONENTS", "ApiKeyOut", "BatchOut", "BatchRequestOutput", "BatchUsage", "ChatCompletionChunk",
    "ChatCompletionOut", "ChatUsage", "CountTokensResponse", "Deleted", "ErrorOut", "EventType", "FileDeleted",
    "FileOut", "GenerateContentResponse", "GoogleErrorOut", "GoogleModel", "GoogleModelList", "HealthOut", "JobOut",
    "ModelList", "ModelWarning", "ModelOut", "ObjectList", "OpenAIErrorOut", "OpenAIHealthOut", "OpenAIWebhookEvent",
    "Page", "PresetOut", "ReadinessOut", "RequestCounts", "ResponseOut", "Shape", "SimpleChatAnswer",
    "SimpleChatHealth", "Timestamp", "Timings", "UnixSeconds", "Usage", "WebhookDeliveryOut", "WebhookEndpointDeleted",
    "WebhookEndpointOut", "WebhookEvent", "components", "iso", "json_schemas", "unix",
]
