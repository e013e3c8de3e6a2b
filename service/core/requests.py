"""The request shapes the core's submit paths read: what to ask and how (a job, every item of a batch), a job's and
a batch's options, and a job's body. Bounds, models and presets come from the Settings.

Each factory builds its model once per Settings (`per_settings`); `validation.parse` reads a request through it.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from service.core.config import Settings
from service.core.documents import PAGE_MODES
from service.core.images import ImageData
from service.core.models import Priority
from service.core.openai_format import ResponsesInput, TextConfig
from service.core.presets import apply_preset
from service.core.structured import ResponseFormat
from service.core.validation import (
    Bool,
    Choice,
    JsonObject,
    Number,
    OptionalNumber,
    RequestModel,
    Text,
    WebhookSecret,
    WebhookUrl,
    combine,
    per_settings,
    spec_of,
)

MAX_SEED = 2**32 - 1  # the engine's generator (a Mersenne Twister) takes 32-bit seeds


@per_settings
def generation_model(settings: Settings) -> type[RequestModel]:
    """How to generate: model, max_tokens, temperature, top_p, ignore_eos and seed."""
    class Generation(RequestModel):
        model: Annotated[str, Choice(choices=sorted(settings.registry), code="unknown_model")] = settings.default_model
        max_tokens: Annotated[int, Number(low=1, high=settings.max_tokens_limit, integer=True)] = \
            settings.default_max_tokens
        temperature: Annotated[float, Number(low=0.0, high=2.0)] = Field(0.0, description="0 is greedy.")
        top_p: Annotated[float | None, OptionalNumber(low=0.0, high=1.0, exclusive_low=True)] = Field(
            None, description="Nucleus sampling; absent leaves the engine's default.")
        ignore_eos: Annotated[bool, Bool()] = Field(
            False, description="Generate exactly max_tokens (benchmarks, load tests).")
        seed: Annotated[int | None, OptionalNumber(low=0, high=MAX_SEED, integer=True)] = Field(
            None, description="Makes a sampled (temperature > 0) answer reproducible; absent: a fresh seed each time.")
    return Generation


@per_settings
def responses_model(settings: Settings) -> type[RequestModel]:
    """OpenAI's Responses request (POST /v1/responses, and the body of a /v1/responses batch line): `input` with one
    image, `instructions`, `max_output_tokens`, `text.format`, and the generation options (`max_tokens` is
    `max_output_tokens`' fallback)."""
    class Responses(RequestModel):
        input: Annotated[Any, ResponsesInput()] = Field(
            description="A string, or messages of input_text and input_image parts (at least one image).")
        instructions: Annotated[str | None, Text(max_chars=settings.max_prompt_chars)] = Field(
            None, description="A system message ahead of the input.")
        max_output_tokens: Annotated[int | None, OptionalNumber(low=1, high=settings.max_tokens_limit,
                                                                integer=True)] = None
        text: Annotated[dict[str, Any] | None, TextConfig(max_depth=settings.max_json_depth)] = Field(
            None, description="{format: {type: json_schema, name, schema, strict}} constrains the output to JSON.")
        stream: Annotated[bool, Bool()] = Field(False, description="Server-sent Responses events.")
    return combine("Responses", Responses, generation_model(settings))


@per_settings
def task_model(settings: Settings) -> type[RequestModel]:
    """What to ask and how, for a job and for every item of a native batch; a `preset` fills what is not set."""
    class Preset(RequestModel):
        preset: Annotated[str | None, Choice(choices=sorted(settings.presets), code="unknown_preset")] = Field(
            None, description="Fills prompt, model, max_tokens, the schema and ground_with_ocr; set fields win.")
        prompt: Annotated[str | None, Text(max_chars=settings.max_prompt_chars)] = Field(
            None, description="Required unless a preset gives one or the model is an OCR engine.")

        @classmethod
        def prefill(cls, values: dict[str, Any]) -> dict[str, Any]:
            if values.get("preset") is not None:  # refuse what is not a configured preset's name before looking it up
                spec_of(cls.model_fields["preset"]).read(values["preset"], "preset")
            return apply_preset(settings.presets, values)[0]

    class Pages(RequestModel):
        pages: Annotated[str | None, Text(max_chars=1000)] = Field(
            None, description='Pages to read, e.g. "1-3,7", numbered from 1 across the inputs; absent reads all.')
        page_mode: Annotated[str, Choice(choices=list(PAGE_MODES))] = Field(
            "document", description="document: the model sees the pages together (up to max_pages_per_request); "
                                    "per_page: one request a page, each with its own result.")
        extra_codes = ("invalid_document", "pdf_encrypted", "document_empty", "too_many_pages", "page_too_large",
                       "page_out_of_range")

    class Output(RequestModel):
        response_format: Annotated[dict[str, Any] | None, ResponseFormat(max_depth=settings.max_json_depth)] = Field(
            None, description="Constrain the output to JSON, in OpenAI's shape.")
        ground_with_ocr: Annotated[bool, Bool()] = Field(
            False, description="OCR the image first and add its text to the prompt.")

    return combine("Task", Preset, generation_model(settings), Output, Pages)


@per_settings
def _options_by_priority(settings: Settings) -> dict[Priority, type[RequestModel]]:
    return {priority: _options(settings, priority) for priority in Priority}


def options_model(settings: Settings, priority: Priority) -> type[RequestModel]:
    """The options a job and a batch share: priority (defaulting to `priority`), metadata and their own webhook."""
    return _options_by_priority(settings)[priority]


def _options(settings: Settings, default: Priority) -> type[RequestModel]:
    class Options(RequestModel):
        priority: Annotated[str, Choice(choices=[p.value for p in Priority])] = Field(
            default.value, description="Interactive queues are always read before bulk ones.")
        metadata: Annotated[dict[str, Any] | None, JsonObject(max_bytes=settings.max_metadata_bytes,
                                                              max_depth=settings.max_json_depth)] = Field(
            None, description="Returned untouched.")
        webhook_url: Annotated[str | None, WebhookUrl(allow_cidrs=settings.webhook_allow_cidrs)] = Field(
            None, description="Receives the ending event, signed (Standard Webhooks).")
        webhook_secret: Annotated[str | None, WebhookSecret()] = Field(
            None, description="Signs those deliveries (default: the server's).")
        extra_codes = ("missing_field",)  # a webhook_secret without a webhook_url (service.core.jobs.webhook)
    return Options


@per_settings
def job_model(settings: Settings) -> type[RequestModel]:
    """A job's fields besides its image, as every API family's job reads them (service.core.jobs.job_request)."""
    class NoCache(RequestModel):
        no_cache: Annotated[bool, Bool()] = Field(
            False, description="Run even if an identical request already has a result.")
    return combine("Job", task_model(settings), options_model(settings, Priority.INTERACTIVE), NoCache)


@per_settings
def job_submit_model(settings: Settings) -> type[RequestModel]:
    """POST /v1/jobs: the image or document (a file, or a data URL in JSON), or several, and the job's fields."""
    class Image(RequestModel):
        image: Annotated[list[bytes], ImageData(several=True)]
        extra_codes = ("invalid_header", "idempotency_key_reused", "quota_exceeded", "broker_unavailable")
    return combine("JobSubmit", Image, job_model(settings))
