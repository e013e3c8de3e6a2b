"""Keeping docs/BENCHMARKS.md current: each bench script owns one `## ` section and rewrites only that."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str) -> None:
    """Replace the section whose `## ` heading starts `section` (or append it), leaving the others alone."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find(heading + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("" if end == -1 else text[end + 1:])
    path.write_text(text)
