"""A job's pages as the API shows them: a job on a document (PDF, TIFF, HEIC) or on several images lists each page
it read, in order, with the page's image and, in per_page mode, the page's own result, usage and timings.

The job's own `result`, `usage` and `timings` are the document-level answer: in per_page mode the pages' texts
joined (a blank line between pages), their usage summed.
"""
from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import MISSING, Field

from service.core import models
from service.core.shapes.base import Shape


class _Outcome(Protocol):
    """What a job and a page share: a result's text, JSON and lines, and token counts."""

    result_text: str | None
    result_json: Any
    result_lines: list[dict[str, Any]] | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class OcrLine(Shape):
    text: str
    box: list[Any]
    confidence: float
    page: int | MISSING = MISSING  # on a multi-page job's document-level lines: the page it was read on


class GroundedField(Shape):
    """One extracted value: where it is on the document and how sure VLQ is of it (service.core.grounding)."""

    value: Any
    confidence: float | None = Field(description="0-1: the value's token probability and its OCR agreement")
    page: int | None = Field(description="1-based page the value was found on; null when not grounded")
    bbox: list[float] | None = Field(description="[x0, y0, x1, y1] on its page, normalized 0-1 (origin top left)")
    grounded: bool = Field(description="false: no OCR text on any page matches the value")


class ReviewReason(Shape):
    field: str
    reason: Literal["ungrounded", "low_confidence"]
    confidence: float | None


class JobResult(Shape):
    # The output: `json` only for a schema-constrained job, `lines` only for OCR; an extraction preset's job also
    # has `fields` (keyed by path: `total`, `line_items[0].amount`), `review` and `review_reasons`.

    # `finish_reason` "length": max_tokens cut the text off (a schema-constrained job then has `json: null`).

    text: str
    finish_reason: str | None
    json_: Any | MISSING = Field(MISSING, alias="json")
    lines: list[OcrLine] | MISSING = MISSING
    fields: dict[str, GroundedField] | MISSING = MISSING
    review: bool | MISSING = Field(MISSING, description="a required field is ungrounded or below review_confidence")
    review_reasons: list[ReviewReason] | MISSING = MISSING

    @classmethod
    def of(cls, row: _Outcome, schema: dict[str, Any] | None,
           grounding: dict[str, Any] | None = None) -> JobResult | None:
        """The result of a job or a page; `schema` is the job's response_schema, `grounding` the job's grounded
        fields (jobs.grounding; a page has none of its own)."""
        if row.result_text is None:
            return None
        result = cls(text=row.result_text, finish_reason=row.finish_reason)
        if schema is not None:
            result.json_ = row.result_json
        if row.result_lines is not None:
            result.lines = [OcrLine.model_validate(line) for line in row.result_lines]
        if grounding is not None:
            result.fields = {path: GroundedField.model_validate(f) for path, f in grounding["fields"].items()}
            result.review = grounding["review"]
            result.review_reasons = [ReviewReason.model_validate(r) for r in grounding["review_reasons"]]
        return result


class Usage(Shape):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, row: _Outcome) -> Usage | None:
        """The token counts of a job or a page; None until both are known (and for OCR or cached answers)."""
        if row.prompt_tokens is None or row.completion_tokens is None:
            return None
        return Usage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                     total_tokens=row.prompt_tokens + row.completion_tokens)

    @classmethod
    def zero(cls) -> Usage:
        return Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


class PageTimings(Shape):
    """Milliseconds, to one decimal: to the page's first token, and generating its answer."""

    ttft_ms: float | None
    inference_ms: float | None


class PageError(Shape):
    code: str
    message: str | None


class JobPageOut(Shape):
    """One page of a job. `image` is the page as an image (GET /v1/jobs/{id}/pages/{page}/image): null until a
    document's page was rendered. `status`, `result`, `usage`, `timings` and `error` are per_page mode's."""

    page: int = Field(description="1-based, counted across the job's inputs (a PDF's own page number)")
    width: int
    height: int
    source_format: str
    image: str | None = Field(description="sha256 of the page's image")
    status: str | None
    result: JobResult | None
    usage: Usage | None
    timings: PageTimings
    error: PageError | None

    @classmethod
    def of(cls, page: models.JobPage, schema: dict[str, Any] | None) -> JobPageOut:
        return cls(
            page=page.number, width=page.width, height=page.height, source_format=page.source_format,
            image=page.blob_sha256, status=page.status, result=JobResult.of(page, schema), usage=Usage.of(page),
            timings=PageTimings(ttft_ms=round_ms(page.ttft_ms), inference_ms=round_ms(page.inference_ms)),
            error=None if page.error_code is None else PageError(code=page.error_code, message=page.error_message))


def round_ms(value: float | None) -> float | None:
    """Milliseconds to one decimal."""
    return None if value is None else round(value, 1)
