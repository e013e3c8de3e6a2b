"""Documents: PDF, multi-page TIFF and HEIC/HEIF, besides plain images. Typed from their bytes (never a file name),
checked before anything is stored, and rendered one page at a time when a worker needs the page.

A job's inputs (one document, or several images) make one sequence of pages, numbered from 1 across the inputs
in the order they came; `pages: "1-3,7"` picks from those numbers. Checks read only headers and page sizes:
a PDF's page size comes from its page tree without rendering it, so a 200x200-inch page (a render bomb) is
refused before any pixel exists, and a 300-page PDF is never held rendered.
"""
from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import pillow_heif
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, UnidentifiedImageError

from service.core.errors import ApiError, ErrorCode
from service.core.images import ACCEPTED_FORMATS, decode_checked, inspect_image

pillow_heif.register_heif_opener()  # Image.open reads HEIC/HEIF from here on (the worker renders them to PNG)

# Documents are read page by page; images are pages of their own.
DOCUMENT_FORMATS = {"PDF": "application/pdf", "TIFF": "image/tiff", "HEIF": "image/heif"}
MEDIA_TYPES = {**ACCEPTED_FORMATS, **DOCUMENT_FORMATS}
PAGE_MODES = ("document", "per_page")
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_RANGE = re.compile(r"^\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?$")


@dataclass(frozen=True)
class Page:
    """One page of a job: `number` counts from 1 across the job's inputs; `index` is its place in its input."""

    number: int
    source: int  # which input (0-based)
    index: int  # the page of a PDF, the frame of a TIFF; 0 for an image
    width: int  # pixels, as rendered (a PDF's at `pdf_dpi`)
    height: int


@dataclass(frozen=True)
class Source:
    """One input as received: its bytes' type and how many pages it has."""

    format: str  # JPEG, PNG, WEBP, PDF, TIFF or HEIF
    sizes: tuple[tuple[int, int], ...]  # (width, height) of every page, in order

    @property
    def is_document(self) -> bool:
        return self.format in DOCUMENT_FORMATS


def sniff(data: bytes) -> str | None:
    """The document format the bytes start with (PDF, TIFF, HEIF), or None for anything else (an image, or junk)."""
    if b"%PDF-" in data[:1024]:  # PDF readers accept a header anywhere in the first 1 KiB
        return "PDF"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF, either byte order
        return "TIFF"
    if data[4:8] == b"ftyp" and (data[8:12] in _HEIF_BRANDS or _compatible_heif(data)):
        return "HEIF"
    return None


def _compatible_heif(data: bytes) -> bool:
    size = int.from_bytes(data[:4], "big")
    brands = data[16:min(size, 64)]
    return any(brands[i:i + 4] in _HEIF_BRANDS for i in range(0, len(brands) - 3, 4))


def inspect_source(data: bytes, *, max_bytes: int, max_pixels: int, dpi: int, max_pages: int) -> Source:
    """Check one input (an image or a document) without rendering a page; raise ApiError on any problem."""
    kind = sniff(data)
    if kind is None:
        info = inspect_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
        return Source(format=info.format, sizes=((info.width, info.height),))
    if len(data) > max_bytes:
        raise ApiError(ErrorCode.IMAGE_TOO_LARGE, f"The {kind} is {len(data)} bytes; the limit is {max_bytes}.",
                       {"bytes": len(data), "limit": max_bytes})
    sizes = _pdf_sizes(data, dpi, max_pages) if kind == "PDF" else _frame_sizes(data, kind, max_pixels, max_pages)
    return Source(format=kind, sizes=sizes)


def _pdf_sizes(data: bytes, dpi: int, max_pages: int) -> tuple[tuple[int, int], ...]:
    with _open_pdf(data) as pdf:
        count = len(pdf)
        _check_count(count, max_pages)
        try:
            # The page tree gives each size without loading the page's content.
            return tuple(_pixels(pdf.get_page_size(index), dpi) for index in range(count))
        except pdfium.PdfiumError:  # the page tree counts pages that are not there
            raise _corrupt("PDF") from None


def _pixels(points: tuple[float, float], dpi: int) -> tuple[int, int]:
    """A PDF page's size in pixels at `dpi` (72 points an inch), as pdfium rounds a render."""
    width, height = (max(1, math.ceil(side * dpi / 72)) for side in points)
    return width, height


# PDFium is not thread-safe (API threads, a worker's job threads): every call into it holds this lock.
_PDFIUM = threading.Lock()


@contextmanager
def _open_pdf(data: bytes | BinaryIO) -> Iterator[pdfium.PdfDocument]:
    """The PDF, open, with _PDFIUM held; ApiError if it cannot be opened."""
    with _PDFIUM:
        _reset_last_error()
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise _refusal(exc.err_code) from None
        try:
            yield pdf
        finally:
            pdf.close()


def _reset_last_error() -> None:
    """Set PDFium's last error to FPDF_ERR_FILE, which opening bytes never sets, by opening a path that is not
    there. PDFium keeps its last error across calls and leaves it untouched when it refuses a document without
    pages, so without this an empty PDF would read as whatever failed before it."""
    handle = pdfium_c.FPDF_LoadDocument(b"/nonexistent/vlq-pdfium-reset.pdf", None)
    if handle:  # cannot happen, short of someone creating that path
        pdfium_c.FPDF_CloseDocument(handle)


def _refusal(code: int) -> ApiError:
    """Why PDFium refused a document, by its error code (read right after `_reset_last_error`)."""
    if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
        return ApiError(ErrorCode.PDF_ENCRYPTED, "The PDF is password-protected; send it without its password.")
    if code == pdfium_c.FPDF_ERR_FILE:  # no error of its own: parsed, and refused for having no page tree
        return ApiError(ErrorCode.DOCUMENT_EMPTY, "The PDF has no pages.")
    return _corrupt("PDF")


def _frame_sizes(data: bytes, kind: str, max_pixels: int, max_pages: int) -> tuple[tuple[int, int], ...]:
    """Every frame's size, each decoded once (one at a time) so a corrupt frame is refused now, not by a worker."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            count = getattr(image, "n_frames", 1)
            _check_count(count, max_pages)
            sizes = []
            for index in range(count):
                image.seek(index)
                width, height = image.size
                if width * height > max_pixels:
                    raise _too_large(index + 1, width, height, max_pixels)
                decode_checked(image)
                sizes.append((width, height))
            return tuple(sizes)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        raise _corrupt(kind) from None


def _corrupt(kind: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_DOCUMENT, f"The {kind} could not be read: it is corrupt or truncated.",
                    {"format": kind})


def _check_count(count: int, max_pages: int) -> None:
    if count == 0:
        raise ApiError(ErrorCode.DOCUMENT_EMPTY, "The document has no pages.")
    if count > max_pages:
        raise ApiError(ErrorCode.TOO_MANY_PAGES, f"The document has {count} pages; the limit is {max_pages}.",
                       {"pages": count, "limit": max_pages})


def _too_large(number: int, width: int, height: int, max_pixels: int) -> ApiError:
    return ApiError(ErrorCode.PAGE_TOO_LARGE,
                    f"Page {number} would be {width}x{height} ({width * height} pixels); the limit is {max_pixels}.",
                    {"page": number, "width": width, "height": height, "limit": max_pixels})


def parse_pages(spec: str, count: int) -> list[int]:
    """Page numbers from "1-3,7" (in the order given, each once); ApiError if the text is malformed or a page is
    past `count`."""
    numbers: dict[int, None] = {}
    for part in spec.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise ApiError(ErrorCode.INVALID_FIELD, f"'pages' must look like \"1-3,7\"; {part.strip()!r} does not.",
                           {"field": "pages"})
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first < 1 or last < first:
            raise ApiError(ErrorCode.INVALID_FIELD, f"'pages' has an empty or reversed range {part.strip()!r}.",
                           {"field": "pages"})
        if last > count:
            raise ApiError(ErrorCode.PAGE_OUT_OF_RANGE,
                           f"'pages' asks for page {last}; the input has {count} page{'s' if count != 1 else ''}.",
                           {"field": "pages", "pages": count, "requested": last})
        numbers.update(dict.fromkeys(range(first, last + 1)))
    return list(numbers)


def select_pages(sources: Sequence[Source], spec: str | None, *, max_pixels: int, max_pages: int) -> list[Page]:
    """The pages a job reads: all of its inputs' pages, or those `spec` names; each checked against `max_pixels`."""
    every = [(source, index, size) for source, item in enumerate(sources) for index, size in enumerate(item.sizes)]
    if len(every) > max_pages:
        raise ApiError(ErrorCode.TOO_MANY_PAGES, f"The inputs have {len(every)} pages; the limit is {max_pages}.",
                       {"pages": len(every), "limit": max_pages})
    numbers = parse_pages(spec, len(every)) if spec is not None else range(1, len(every) + 1)
    pages = []
    for number in numbers:
        source, index, (width, height) = every[number - 1]
        if width * height > max_pixels:  # from the page's size alone: nothing was rendered
            raise _too_large(number, width, height, max_pixels)
        pages.append(Page(number=number, source=source, index=index, width=width, height=height))
    return pages


class RenderError(Exception):
    """A stored document's page could not be rendered (pdfium's own errors, as one type)."""


def render_page(source: bytes | BinaryIO, kind: str, index: int, dpi: int) -> Image.Image:
    """Page `index` of a document (bytes, or a seekable file read as needed) as an image: a PDF page rendered at
    `dpi` on white, a TIFF or HEIF frame decoded. Only that page is loaded."""
    if kind == "PDF":
        try:
            with _open_pdf(source) as pdf:
                page = pdf[index]
                try:
                    bitmap = page.render(scale=dpi / 72)
                    try:
                        return bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer goes with it
                    finally:
                        bitmap.close()
                finally:
                    page.close()
        except (ApiError, pdfium.PdfiumError) as exc:
            raise RenderError(f"page {index + 1} could not be rendered: {exc}") from None
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.seek(index)
        image.load()
        return image.copy()


def png_bytes(image: Image.Image) -> bytes:
    """A rendered page as stored: PNG (lossless, and every browser shows it)."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)  # fast: pages are stored once and read a few times
    return buffer.getvalue()
