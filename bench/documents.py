"""Synthetic multi-page invoices with known values and known positions, as PDF and multi-page TIFF.

Each invoice is laid out on A4 pages at 150 DPI: the vendor, number and date on page 1, line items over every page
(description, quantity, amount columns), totals on the last. Every value's box is recorded, normalized to its
page, so grounding can be scored by page and IoU. Printed forms vary as real documents do: dates as ISO,
`05/03/2024` or `March 5, 2024`; amounts as `1234.50` or `1,234.50`, some after a currency code.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageSequence

from bench.receipts import FONTS, MERCHANTS, PRODUCTS, _font

PAGE = (1240, 1754)  # A4 at 150 DPI
DPI = 150
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True)
class Placed:
    """Where a value was printed: its page (1-based) and box, normalized to the page."""

    page: int
    box: tuple[float, float, float, float]


@dataclass
class Invoice:
    values: dict[str, Any]  # the true extraction, as the `invoice` preset's schema has it
    placed: dict[str, Placed]  # field path -> where its value is printed
    pages: list[Image.Image]
    lines: list[list[str]] = field(default_factory=list)  # the text printed on each page, top to bottom


def make_invoice(rng: random.Random, n_pages: int = 2, items_per_page: int = 6, font: str = FONTS[0],
                 size: int = 26) -> Invoice:
    """A random invoice over `n_pages` pages whose amounts add up."""
    pen = _Pen(font, size, n_pages)
    vendor, number = rng.choice(MERCHANTS), f"INV-{rng.randint(2020, 2025)}-{rng.randint(1, 9999):04d}"
    year, month, day = rng.randint(2020, 2025), rng.randint(1, 12), rng.randint(1, 28)
    printed_date = rng.choice((f"{year}-{month:02d}-{day:02d}", f"{day:02d}/{month:02d}/{year}",
                               f"{_MONTHS[month - 1]} {day}, {year}"))
    currency = rng.choice(("USD", "EUR", "GBP"))
    money = rng.choice((lambda c: f"{c / 100:.2f}", lambda c: f"{c / 100:,.2f}"))
    values: dict[str, Any] = {"vendor": vendor, "invoice_number": number, "date": f"{year}-{month:02d}-{day:02d}",
                              "currency": currency, "line_items": []}
    pen.line([(vendor.upper(), "vendor")])
    pen.line([("Invoice No:", None), (number, "invoice_number")])
    pen.line([("Date:", None), (printed_date, "date")])
    pen.line([("Currency:", None), (currency, "currency")])
    pen.skip()
    cents_total = 0
    for page in range(n_pages):
        if page:
            pen.new_page()
        pen.line([("Description", None), ("Qty", None, 0.62), ("Amount", None, 0.8)])
        for _ in range(items_per_page):
            index = len(values["line_items"])
            quantity, cents = rng.randint(1, 9), rng.randint(99, 250_000)
            cents_total += cents
            values["line_items"].append({"description": rng.choice(PRODUCTS), "quantity": quantity,
                                         "amount": cents / 100})
            path = f"line_items[{index}]"
            pen.line([(values["line_items"][-1]["description"], f"{path}.description"),
                      (str(quantity), f"{path}.quantity", 0.62), (money(cents), f"{path}.amount", 0.8)])
    tax = round(cents_total * 0.08)
    values.update(subtotal=cents_total / 100, tax=tax / 100, total=(cents_total + tax) / 100)
    pen.skip()
    pen.line([("Subtotal", None), (money(cents_total), "subtotal", 0.8)])
    pen.line([("Tax 8%", None), (money(tax), "tax", 0.8)])
    pen.line([("TOTAL", None), (currency, None, 0.7), (money(cents_total + tax), "total", 0.8)])
    return Invoice(values=values, placed=pen.placed, pages=pen.finish(), lines=pen.lines)


class _Pen:
    """Writes lines of cells down the pages, recording where each value's text lands."""

    def __init__(self, font: str, size: int, n_pages: int) -> None:
        self.font, self.size, self.n_pages = _font(font, size), size, n_pages
        self.placed: dict[str, Placed] = {}
        self.lines: list[list[str]] = []
        self._pages: list[Image.Image] = []
        self.new_page()

    def new_page(self) -> None:
        self._pages.append(Image.new("L", PAGE, 255))
        self._draw = ImageDraw.Draw(self._pages[-1])
        self.lines.append([])
        self._y = 120

    def skip(self) -> None:
        self._y += self.size

    def line(self, cells: list[tuple[Any, ...]]) -> None:
        """Cells of (text, field path or None, x as a share of the page width); a cell without x follows the
        previous one after a space. A value's box spans its advance width and the font's line height (ascender
        to descender), as an annotator draws it, not only its ink."""
        width, height = PAGE
        ascent, descent = self.font.getmetrics()
        x = 0.08 * width
        for cell in cells:
            text, path = str(cell[0]), cell[1]
            x = cell[2] * width if len(cell) > 2 else x
            self._draw.text((x, self._y), text, fill=0, font=self.font)
            end = x + self.font.getlength(text)
            if path is not None:
                self.placed[path] = Placed(len(self._pages), (x / width, self._y / height, end / width,
                                                              (self._y + ascent + descent) / height))
            x = end + self.font.getlength(" ")
        self.lines[-1].append(" ".join(str(cell[0]) for cell in cells))
        self._y += int(self.size * 1.7)

    def finish(self) -> list[Image.Image]:
        for number, page in enumerate(self._pages, 1):
            footer = f"Page {number} of {len(self._pages)}"
            ImageDraw.Draw(page).text((int(0.08 * PAGE[0]), PAGE[1] - 100), footer, fill=0, font=self.font)
            self.lines[number - 1].append(footer)
        return [page.convert("RGB") for page in self._pages]


def to_pdf(pages: list[Image.Image]) -> bytes:
    """The pages as one PDF (Pillow's writer: each page an image at DPI)."""
    buffer = io.BytesIO()
    pages[0].save(buffer, format="PDF", save_all=True, append_images=pages[1:], resolution=DPI)
    return buffer.getvalue()


def to_tiff(pages: list[Image.Image]) -> bytes:
    """The pages as one multi-page TIFF, as office scanners write them."""
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate",
                  dpi=(DPI, DPI))
    return buffer.getvalue()


def render_pdf(data: bytes, dpi: int = DPI) -> list[Image.Image]:
    """A PDF's pages rendered by PDFium, at `dpi`."""
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        return [page.render(scale=dpi / 72).to_pil().convert("RGB") for page in document]
    finally:
        document.close()


def read_tiff(data: bytes) -> list[Image.Image]:
    """A multi-page TIFF's frames."""
    with Image.open(io.BytesIO(data)) as image:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
