"""Task presets: a named prompt + optional JSON schema + max_tokens + model + max_pixels, chosen with `preset` on a job.

Built-in presets are defined here; config.yaml's `presets:` section changes their fields or adds new ones.
`apply_preset` is the one place a request's fields are filled from a preset (jobs today, batch items later).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from service.core.errors import ApiError, ErrorCode
from service.core.structured import check_schema, compile_schema

OCR_MODEL = "rapidocr"  # the registry model the `ocr` preset runs on
OCR_ENGINE = "rapidocr"

_MONEY = {"type": ["number", "null"], "minimum": 0}
_LINE_ITEMS = {
    "type": "array", "maxItems": 16,
    "items": {
        "type": "object", "additionalProperties": False, "required": ["description", "quantity", "amount"],
        "properties": {"description": {"type": "string", "maxLength": 40}, "quantity": _MONEY, "amount": _MONEY},
    },
}
_DATE = {"type": ["string", "null"], "maxLength": 10, "description": "YYYY-MM-DD"}
_CURRENCY = {"type": ["string", "null"], "maxLength": 3, "description": "ISO 4217 code"}


def _document_schema(party: str, extra: dict[str, Any]) -> dict[str, Any]:
    properties = {party: {"type": ["string", "null"], "maxLength": 48}, **extra, "date": _DATE,
                  "currency": _CURRENCY, "line_items": _LINE_ITEMS, "subtotal": _MONEY, "tax": _MONEY, "total": _MONEY}
    return {"type": "object", "additionalProperties": False, "required": list(properties), "properties": properties}


MIN_PIXELS = 32 * 32  # one Qwen3-VL image token (16 px patches, merged 2x2)

MODERATION_LABELS = ("safe", "nudity", "violence", "hate", "drugs", "weapons", "spam", "other")

BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "ocr": {"model": OCR_MODEL, "prompt": "OCR"},
    "receipt": {
        "prompt": "Extract the receipt's fields as JSON. Use null for what is not on the receipt; dates as YYYY-MM-DD.",
        "schema": _document_schema("merchant", {}),
    },
    "invoice": {
        "prompt": "Extract the invoice's fields as JSON. Use null for what is not on the invoice; dates as YYYY-MM-DD.",
        "schema": _document_schema("vendor", {"invoice_number": {"type": ["string", "null"], "maxLength": 32}}),
    },
    # A sentence or a label needs the gist of an image, not its small print: half the model's pixels halves the
    # image tokens, and costs about a third less time per image (docs/BENCHMARKS.md, "max_pixels per preset").
    "describe": {"prompt": "Describe the product or scene in this image in one sentence.", "max_tokens": 64,
                 "max_pixels": 100_352},
    "moderate": {
        "prompt": "Classify this image for content moderation. Pick the one label that fits best, "
                  "give a short reason and your confidence from 0 to 1.",
        "labels": list(MODERATION_LABELS),
        "max_pixels": 100_352,
    },
}


class PresetError(ValueError):
    """A preset in the configuration is invalid."""


@dataclass(frozen=True)
class Preset:
    name: str
    prompt: str
    model: str | None = None  # None: the job's default_model
    schema: Mapping[str, Any] | None = None
    max_tokens: int | None = None  # None: enough for the schema's longest output, else default_max_tokens
    labels: tuple[str, ...] = ()  # a label-classification preset: output {label, reason, confidence}
    ground_with_ocr: bool = False
    max_pixels: int | None = None  # lowers the model's max_pixels for this task; None: the model's

    @property
    def extracts(self) -> bool:
        """An extraction (invoice, receipt, a user preset with a schema): its fields are grounded on the page."""
        return self.schema is not None and not self.labels

    def output_schema(self) -> dict[str, Any] | None:
        if self.labels:
            return {"type": "object", "additionalProperties": False, "required": ["label", "reason", "confidence"],
                    "properties": {"label": {"enum": list(self.labels)},
                                   "reason": {"type": "string", "maxLength": 160},
                                   "confidence": {"type": "number", "minimum": 0, "maximum": 1}}}
        return None if self.schema is None else dict(self.schema)


def build_presets(raw: Mapping[str, Any] | None, models: Mapping[str, Any], max_tokens_limit: int) -> dict[str, Preset]:
    """Built-in presets overlaid with `raw` (config.yaml), each checked: known model, valid schema, sane budget."""
    merged = {name: dict(fields) for name, fields in BUILTIN_PRESETS.items()}
    for name, fields in (raw or {}).items():
        if not isinstance(fields, Mapping):
            raise PresetError(f"preset {name!r}: must be a mapping of prompt, model, schema, max_tokens...")
        merged[name] = {**merged.get(name, {}), **fields}
    return {name: _build(name, fields, models, max_tokens_limit) for name, fields in merged.items()}


def _build(name: str, fields: dict[str, Any], models: Mapping[str, Any], max_tokens_limit: int) -> Preset:
    known = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    unknown = set(fields) - known
    if unknown:
        raise PresetError(f"preset {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(fields.get("prompt"), str) or not fields["prompt"].strip():
        raise PresetError(f"preset {name!r}: 'prompt' is required")
    if fields.get("model") is not None and fields["model"] not in models:
        raise PresetError(f"preset {name!r}: model {fields['model']!r} is not in the model registry")
    preset = Preset(name=name, **{**fields, "labels": tuple(fields.get("labels") or ())})
    schema = preset.output_schema()
    if preset.model is not None and getattr(models[preset.model], "engine", None) == OCR_ENGINE:
        if schema is not None or preset.ground_with_ocr:
            raise PresetError(f"preset {name!r}: an OCR model takes no schema and no OCR grounding")
    if schema is not None:
        try:
            check_schema(schema)
        except (jsonschema.SchemaError, TypeError) as exc:
            raise PresetError(f"preset {name!r}: 'schema' is not a valid JSON Schema: "
                              f"{getattr(exc, 'message', exc)}") from None
    if preset.max_tokens is None and schema is not None:
        grammar = compile_schema(schema)
        budget = grammar.max_tokens if grammar else max_tokens_limit
        preset = dataclasses.replace(preset, max_tokens=min(budget, max_tokens_limit))
    if preset.max_pixels is not None and (type(preset.max_pixels) is not int or preset.max_pixels < MIN_PIXELS):
        raise PresetError(f"preset {name!r}: max_pixels must be an integer of at least {MIN_PIXELS}")
    if preset.max_tokens is not None and not 1 <= preset.max_tokens <= max_tokens_limit:
        raise PresetError(f"preset {name!r}: max_tokens must be between 1 and {max_tokens_limit}")
    return preset


def apply_preset(presets: Mapping[str, Preset], fields: Mapping[str, Any]) -> tuple[dict[str, Any], Preset | None]:
    """(`fields` with the named preset's defaults filled in, the preset); fields the caller set win.

    The preset supplies prompt, model, max_tokens and ground_with_ocr; its schema is `preset.output_schema()`,
    which the caller's own `response_format` replaces.
    """
    name = fields.get("preset")
    if name is None or name == "":
        return dict(fields), None
    preset = presets.get(name)
    if preset is None:
        raise ApiError(ErrorCode.UNKNOWN_PRESET, f"No preset named {name!r}.",
                       {"preset": name, "available": sorted(presets)})
    defaults: dict[str, Any] = {"prompt": preset.prompt, "model": preset.model, "max_tokens": preset.max_tokens,
                                "ground_with_ocr": preset.ground_with_ocr or None}
    filled = {key: value for key, value in defaults.items() if value is not None}
    filled.update({key: value for key, value in fields.items() if value is not None and value != ""})
    return filled, preset
