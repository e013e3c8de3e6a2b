"""Documents for tests, generated here with known text at known places: PDFs (Pillow's PDF writer, or written by
hand for the broken kinds), multi-page TIFFs and HEIC (pillow-heif's encoder)."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

# Pages are drawn at this resolution; a PDF page is then 8.5 x 11 inches (Letter).
DRAW_DPI = 100
PAGE = (850, 1100)
TEXT_AT = (80, 120)  # where each page's text starts, in pixels at DRAW_DPI


def page_image(text: str, size: tuple[int, int] = PAGE) -> Image.Image:
    """A white page with `text` in large black letters at TEXT_AT."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text(TEXT_AT, text, fill="black", font=ImageFont.load_default(size=48))
    return image


def make_pdf(texts: Sequence[str], *, size: tuple[int, int] = PAGE, dpi: float = DRAW_DPI) -> bytes:
    """A PDF with one page per text (each page `size` pixels at `dpi`, so `size / dpi` inches)."""
    pages = [page_image(text, size) for text in texts]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return buffer.getvalue()


def make_tiff(texts: Sequence[str], size: tuple[int, int] = (600, 300)) -> bytes:
    """A multi-page TIFF (as office scanners write them), one frame per text."""
    pages = [page_image(text, size) for text in texts]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    return buffer.getvalue()


def make_heic(text: str = "HEIC 42", size: tuple[int, int] = (600, 300)) -> bytes:
    """A HEIC photo, as phones save them."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    page_image(text, size).save(buffer, "HEIF", quality=90)
    return buffer.getvalue()


def _pdf(objects: Sequence[bytes], trailer: bytes = b"") -> bytes:
    """A PDF written object by object, with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref))
    return out.getvalue()


def encrypted_pdf() -> bytes:
    """A one-page PDF under the standard security handler whose user password is unknown (not empty)."""
    catalog = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]
    security = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -44 >>" % (os.urandom(32).hex().encode(),
                                                                             os.urandom(32).hex().encode())
    ids = b"/ID [<%s> <%s>] " % (os.urandom(16).hex().encode(), os.urandom(16).hex().encode())
    return _pdf([*catalog, security], b"/Encrypt 4 0 R " + ids)


def empty_pdf() -> bytes:
    """A well-formed PDF without a single page."""
    return _pdf([b"<< /Type /Catalog >>"])


def corrupt_pdf() -> bytes:
    """A real PDF cut in half: its header says PDF, its cross-references are gone."""
    data = make_pdf(["TRUNCATED"])
    return data[: len(data) // 2]


def corrupt_tiff() -> bytes:
    """A TIFF header followed by garbage."""
    return b"II*\x00" + os.urandom(64)


def huge_page_pdf() -> bytes:
    """A one-page PDF whose page is 200 x 200 inches (a render bomb: 900 million pixels at 150 dpi), in a few KB."""
    return make_pdf(["BIG"], size=(200, 200), dpi=1.0)
