"""PDF pages as the worker reads them: render time per page and peak memory on a 300-page PDF (`make bench`).

    python -m bench.document_bench [--pages 300] [--dpi 150] [--write docs/BENCHMARKS.md]

A scanned-invoice-like PDF (one greyscale image per Letter page, with text) is generated, then read the way a job
reads it: the submit-time check (page sizes from the page tree, nothing rendered), then every page in turn as a
per_page job does (PDFium renders it from the stored file at the DPI, it is stored as PNG, and scaled to the
model's pixel budget). The reading runs in a child process of its own, so its peak resident memory (VmHWM,
which a new program starts afresh, unlike ru_maxrss) is the reading's and not the generator's; holding every
rendered page at once would take pages x width x height x 3 bytes, which the table shows beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bench.markdown import write_section

_SECTION = "## Documents: PDF render time and memory"


def make_pdf(path: Path, pages: int) -> None:
    """`pages` Letter pages at 100 dpi, greyscale scans with a few lines of text each, written page by page."""
    font = ImageFont.load_default(size=28)

    def page(number: int) -> Image.Image:
        image = Image.new("L", (850, 1100), 250)
        draw = ImageDraw.Draw(image)
        draw.text((60, 60), f"INVOICE 2026-{number:04d}", fill=0, font=font)
        for line in range(20):
            draw.text((60, 160 + 40 * line), f"item {line + 1:02d}   qty {line % 7 + 1}   {number + line}.50",
                      fill=30, font=font)
        return image

    first = page(1)
    first.save(path, "PDF", save_all=True, append_images=(page(n) for n in range(2, pages + 1)), resolution=100)


def read(path: Path, dpi: int, max_pixels: int, model_pixels: int) -> dict[str, float]:
    """Check, then render, store (as PNG bytes) and scale every page one at a time; timings and peak memory."""
    from service.core import documents
    from workers.engines.images import fit, reduce_to

    baseline_mb = _peak_mb()
    data = path.read_bytes()
    started = time.perf_counter()
    source = documents.inspect_source(data, max_bytes=len(data) + 1, max_pixels=max_pixels, dpi=dpi,
                                      max_pages=len(data))
    check_ms = 1000 * (time.perf_counter() - started)
    del data
    render_ms, png_ms, scale_ms, png_bytes = [], [], [], 0
    with path.open("rb") as stream:
        for index in range(len(source.sizes)):
            stream.seek(0)
            started = time.perf_counter()
            image = documents.render_page(stream, "PDF", index, dpi)
            rendered = time.perf_counter()
            stored = documents.png_bytes(image)
            encoded = time.perf_counter()
            fit(reduce_to(image, model_pixels), model_pixels)  # the rendering itself, as the worker scales it
            scaled = time.perf_counter()
            render_ms.append(1000 * (rendered - started))
            png_ms.append(1000 * (encoded - rendered))
            scale_ms.append(1000 * (scaled - encoded))
            png_bytes += len(stored)
            del image, stored
    width, height = source.sizes[0]
    return {"pages": len(source.sizes), "width": width, "height": height, "check_ms": check_ms,
            "render_median_ms": statistics.median(render_ms), "render_p95_ms": _p95(render_ms),
            "png_median_ms": statistics.median(png_ms), "scale_median_ms": statistics.median(scale_ms),
            "page_median_ms": statistics.median(r + p + s for r, p, s in zip(render_ms, png_ms, scale_ms,
                                                                              strict=True)),
            "total_s": (sum(render_ms) + sum(png_ms) + sum(scale_ms)) / 1000, "png_mb_per_page": png_bytes / 1e6 / len(
                source.sizes), "baseline_mb": baseline_mb, "peak_mb": _peak_mb()}


def _peak_mb() -> float:
    """This process's peak resident memory so far (Linux: VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def report(result: dict[str, float], pdf_mb: float, dpi: int, model_pixels: int) -> str:
    all_at_once_mb = result["pages"] * result["width"] * result["height"] * 3 / 1e6
    rows = [
        ("pages", f"{result['pages']:.0f} (Letter, {result['width']:.0f}x{result['height']:.0f} at {dpi} dpi)"),
        ("PDF size", f"{pdf_mb:.1f} MB"),
        ("submit check, whole PDF (page sizes, nothing rendered)", f"{result['check_ms']:.0f} ms"),
        ("render one page, median / p95", f"{result['render_median_ms']:.0f} / {result['render_p95_ms']:.0f} ms"),
        ("encode it as PNG (stored), median", f"{result['png_median_ms']:.0f} ms"),
        (f"scale to the model's budget ({model_pixels:,} px), median", f"{result['scale_median_ms']:.0f} ms"),
        ("a page in all, median", f"{result['page_median_ms']:.0f} ms"),
        ("all pages, one after another", f"{result['total_s']:.1f} s"),
        ("stored PNG per page", f"{result['png_mb_per_page']:.2f} MB"),
        ("peak RSS of the reading process",
         f"{result['peak_mb']:.0f} MB ({result['baseline_mb']:.0f} MB after imports)"),
        ("every rendered page held at once would take", f"{all_at_once_mb:,.0f} MB"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (f"{_SECTION}\n\n`make bench` (`python -m bench.document_bench --pages {result['pages']:.0f} --dpi {dpi} "
            f"--write docs/BENCHMARKS.md`): a generated scanned-invoice PDF read the way a per_page job reads it, "
            "one page at a time, in a process of its own.\n\n| | |\n|---|---|\n" + table + "\n\n"
            "Memory stays bounded by a page: PDFium reads the stored file as a page needs it, and each page is "
            "rendered, stored and scaled before the next one.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument("--model-pixels", type=int, default=448 * 448)
    parser.add_argument("--max-pixels", type=int, default=40_000_000)
    parser.add_argument("--write", type=Path, help="update this Markdown file's section")
    parser.add_argument("--read", type=Path, help=argparse.SUPPRESS)  # the child: read this PDF, print JSON
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(args.read, args.dpi, args.max_pixels, args.model_pixels)))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.pdf"
        started = time.perf_counter()
        make_pdf(path, args.pages)
        print(f"generated {args.pages} pages in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        child = subprocess.run([sys.executable, "-m", "bench.document_bench", "--read", str(path), "--dpi",
                                str(args.dpi), "--model-pixels", str(args.model_pixels), "--max-pixels",
                                str(args.max_pixels)], check=True, capture_output=True, text=True)
        section = report(json.loads(child.stdout), path.stat().st_size / 1e6, args.dpi, args.model_pixels)
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
