"""Synthetic receipts and invoices with known ground truth, rendered with Pillow.

    python -m bench.receipts OUT_DIR [--count 10] [--seed 0]   # writes PNGs and truth.json

Fonts are the DejaVu faces the Debian `fonts-dejavu-core` package installs (present on the dev and CI
image); Pillow's own bundled font is the fallback. Degradations: slight rotation, blur and noise.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf")
MERCHANTS = ("Corner Grocery", "Blue Harbor Cafe", "Nordic Hardware", "Green Leaf Market", "City Books",
             "Atlas Office Supply", "Sunrise Bakery", "Metro Pharmacy")
PRODUCTS = ("Coffee beans", "Whole milk", "Rye bread", "Olive oil", "Notebook A5", "Ballpoint pens", "Batteries AA",
            "Green tea", "Paper towels", "Apples", "Cheddar cheese", "Printer paper", "Screwdriver set", "Soap bar",
            "Orange juice", "USB cable", "Desk lamp", "Pasta 500g", "Tomato sauce", "Dish sponge")
CURRENCIES = ("USD", "EUR", "GBP", "CHF")


@dataclass
class Document:
    kind: str  # "receipt" | "invoice"
    merchant: str
    date: str
    currency: str
    items: list[tuple[str, int, str]]  # (description, quantity, amount)
    subtotal: str
    tax: str
    total: str
    invoice_number: str | None = None
    lines: list[str] = field(default_factory=list)  # the text as printed, top to bottom


@dataclass(frozen=True)
class Style:
    font: str = FONTS[0]
    size: int = 22
    rotation: float = 0.0  # degrees
    blur: float = 0.0  # Gaussian radius in pixels
    noise: int = 0  # amplitude of uniform pixel noise


def make_document(rng: random.Random, kind: str, n_items: int) -> Document:
    """A random receipt or invoice whose amounts add up."""
    items = []
    for _ in range(n_items):
        quantity = rng.randint(1, 5)
        cents = rng.randint(99, 4999) * quantity
        items.append((rng.choice(PRODUCTS), quantity, f"{cents / 100:.2f}"))
    subtotal = sum(round(float(amount) * 100) for _, _, amount in items)
    tax = round(subtotal * 0.08)
    # Drawn in this order so a seed always gives the same documents.
    merchant, date = rng.choice(MERCHANTS), f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    currency = rng.choice(CURRENCIES)
    number = f"INV-{rng.randint(2020, 2025)}-{rng.randint(1, 9999):04d}" if kind == "invoice" else None
    doc = Document(kind=kind, merchant=merchant, date=date, currency=currency, items=items,
                   subtotal=f"{subtotal / 100:.2f}", tax=f"{tax / 100:.2f}", total=f"{(subtotal + tax) / 100:.2f}",
                   invoice_number=number)
    doc.lines = [doc.merchant.upper(), f"Date: {doc.date}"]
    if doc.invoice_number:
        doc.lines.append(f"Invoice No: {doc.invoice_number}")
    doc.lines += [f"{desc} {qty} x {amount}" for desc, qty, amount in items]
    doc.lines += [f"Subtotal {doc.subtotal}", f"Tax {doc.tax}", f"TOTAL {doc.currency} {doc.total}"]
    return doc


def render(doc: Document, style: Style = Style()) -> Image.Image:
    """The document as a white page with black text, one printed line per `doc.lines` entry."""
    font = _font(style.font, style.size)
    pad, gap = style.size, int(style.size * 0.6)
    widths = [font.getbbox(line)[2] for line in doc.lines]
    height = pad * 2 + len(doc.lines) * (style.size + gap)
    image = Image.new("L", (max(widths) + pad * 2, height), 255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(doc.lines):
        draw.text((pad, pad + index * (style.size + gap)), line, fill=0, font=font)
    if style.rotation:
        image = image.rotate(style.rotation, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    if style.blur:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    if style.noise:
        noise = Image.effect_noise(image.size, style.noise)
        image = Image.blend(image, noise, 0.25)
    return image.convert("RGB")


def dataset(name: str, count: int, seed: int = 0) -> list[tuple[Document, Style]]:
    """One of the evaluation sets: `clean`, `degraded` (rotation, blur, noise) or `long` (30-40 items)."""
    rng = random.Random(f"{name}-{seed}")
    out = []
    for index in range(count):
        kind = "invoice" if index % 2 else "receipt"
        n_items = rng.randint(30, 40) if name == "long" else rng.randint(2, 8)
        style = Style(font=FONTS[index % len(FONTS)], size=rng.randint(18, 28))
        if name == "degraded":
            style = Style(font=style.font, size=style.size, rotation=rng.uniform(-2, 2),
                          blur=rng.uniform(0.6, 1.2), noise=rng.randint(30, 60))
        out.append((make_document(rng, kind, n_items), style))
    return out


def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = FONT_DIR / name
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in ("clean", "degraded", "long"):
        for index, (doc, style) in enumerate(dataset(name, args.count, args.seed)):
            filename = f"{name}-{index:03d}.png"
            render(doc, style).save(args.out / filename)
            truth[filename] = asdict(doc) | {"style": asdict(style)}
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1))
    print(f"wrote {len(truth)} images and truth.json to {args.out}")


if __name__ == "__main__":
    main()
