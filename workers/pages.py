"""A job's pages on the worker: each page's image (a document's rendered when first needed, then stored), and the
per-page outcomes of a per_page job.

Memory stays bounded by a page: a PDF is read from its blob (pdfium loads what a page needs), one page is rendered
at a time, stored as PNG, and dropped before the next; only the scaled image the engine sees is kept.
"""
from __future__ import annotations

import logging
from typing import Any

from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.core import documents
from service.core.models import Job, JobPage
from workers.engines.base import GenerationResult
from workers.engines.images import fit, prepare_image, reduce_to
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

# Set on a page once its result is recorded, so a second attempt (the first one's worker was lost) skips it.
DONE = "succeeded"


def load(runtime: WorkerRuntime, job: Job) -> list[JobPage]:
    """The job's page rows, in order (detached: read, and changed only through `record`)."""
    def read(session: Session) -> list[JobPage]:
        return list(session.scalars(select(JobPage).where(JobPage.job_id == job.id).order_by(JobPage.position)))
    return runtime.db.retrying(read, what=f"job {job.id}: pages", give_up=runtime.give_up_after(None))


def prepared(runtime: WorkerRuntime, page: JobPage, max_pixels: int) -> tuple[bytes, Image.Image]:
    """The page's stored image bytes, and the page as the engine takes it (within `max_pixels`).

    A document's page is rendered now (stored, and recorded on the page) unless an earlier attempt did it
    already; the rendering itself is scaled (first by an integer factor, as a decoded image is), not decoded
    again from its PNG. Raises BlobNotFound, or
    OSError/ValueError for a page that cannot be read.
    """
    if page.blob_sha256 is not None:
        data = runtime.blobs.get(page.blob_sha256)
        return data, prepare_image(data, max_pixels)
    with runtime.blobs.open(page.source_sha256) as stream:
        # A local file is read as the page needs it; a stream that cannot seek (an object store's) is read whole.
        source = stream if stream.seekable() else stream.read()
        try:
            image = documents.render_page(source, page.source_format, page.source_index, runtime.settings.pdf_dpi)
        except documents.RenderError as exc:
            raise ValueError(str(exc)) from None
    data = documents.png_bytes(image)
    digest = runtime.blobs.put(data)
    record(runtime, page, blob_sha256=digest, width=image.width, height=image.height)
    return data, fit(reduce_to(image, max_pixels), max_pixels)


def record(runtime: WorkerRuntime, page: JobPage, **values: Any) -> None:
    """Write some of a page's columns (and keep the detached row in step)."""
    def write(session: Session) -> None:
        session.execute(update(JobPage).where(JobPage.job_id == page.job_id, JobPage.position == page.position)
                        .values(**values))
    runtime.db.retrying(write, what=f"job {page.job_id}: page {page.number}", give_up=runtime.give_up_after(None))
    for name, value in values.items():
        setattr(page, name, value)


def record_result(runtime: WorkerRuntime, page: JobPage, result: GenerationResult, parsed: Any,
                  error: tuple[str, str] | None) -> None:
    """A per_page job's page outcome: its result, and its error if it failed (invalid output, say)."""
    record(runtime, page, status="failed" if error else DONE, result_text=result.text, result_json=parsed,
           result_lines=result.lines, finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
           completion_tokens=result.completion_tokens, ttft_ms=result.ttft_ms, inference_ms=result.inference_ms,
           error_code=error[0] if error else None, error_message=error[1] if error else None)


def as_result(page: JobPage) -> GenerationResult:
    """A page's recorded outcome (an earlier attempt's), to count in the document's answer."""
    return GenerationResult(text=page.result_text or "", finish_reason=page.finish_reason or "stop",
                            prompt_tokens=page.prompt_tokens, completion_tokens=page.completion_tokens,
                            ttft_ms=page.ttft_ms, inference_ms=page.inference_ms or 0.0, batch_size=1,
                            lines=page.result_lines)


def combined(results: list[tuple[int, GenerationResult]]) -> GenerationResult:
    """The document-level answer of a per_page job: the pages' texts joined by a blank line, usage and engine time
    summed, the first page's time to first token, OCR lines each with its page."""
    def total(values: list[int | None]) -> int | None:
        return None if any(value is None for value in values) else sum(v for v in values if v is not None)

    lines = [{**line, "page": number} for number, result in results for line in result.lines or []]
    outcomes = [result for _, result in results]
    return GenerationResult(
        text="\n\n".join(result.text for result in outcomes),
        finish_reason="length" if any(r.finish_reason == "length" for r in outcomes) else "stop",
        prompt_tokens=total([r.prompt_tokens for r in outcomes]),
        completion_tokens=total([r.completion_tokens for r in outcomes]),
        ttft_ms=outcomes[0].ttft_ms if outcomes else None,
        inference_ms=sum(r.inference_ms for r in outcomes),
        batch_size=max((r.batch_size for r in outcomes), default=1),
        lines=lines if any(r.lines is not None for r in outcomes) else None)
