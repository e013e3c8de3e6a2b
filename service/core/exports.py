"""What VLQ hands out as files: CSV that spreadsheets open as data, and download names any client can read.

Every CSV VLQ writes goes through `csv_lines`: a text cell that a spreadsheet would read as a formula (it starts with
`=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading single quote, as OWASP's "CSV Injection" page
recommends; numbers VLQ writes itself (token counts, milliseconds) stay numbers. Every download names its file
with `content_disposition` (RFC 6266): an ASCII `filename` for old clients and `filename*` (RFC 8187) with the
exact name in UTF-8.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# RFC 8187 attr-char beyond letters and digits (quote() keeps letters, digits and "_.-~" itself).
_ATTR_CHARS = "!#$&+^`|"
# Not safe in a quoted-string fallback: controls, quote, backslash, "%" (RFC 6266 appendix D), and non-ASCII.
_UNSAFE_FALLBACK = re.compile(r'[\x00-\x1f\x7f"\\%]|[^\x00-\x7f]')


def csv_cell(value: Any) -> Any:
    """A cell as written: text a spreadsheet would run as a formula gets a leading single quote; None is empty;
    anything else (numbers) is left as it is."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_lines(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """A header line, then one CSV record per row (only `columns`, in order), every cell through `csv_cell`;
    a generator, so a long export streams."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_cell(name) for name in columns])
    for row in rows:
        writer.writerow([csv_cell(row.get(name)) for name in columns])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def field_columns(groundings: Iterable[Mapping[str, Any] | None]) -> list[str]:
    """CSV columns for extractions' grounded fields: `fields.<path>` and `fields.<path>.confidence` for every
    field path any of them has, in the order first seen, then `review`; none if no job was grounded."""
    paths: dict[str, None] = {}
    for grounding in groundings:
        paths.update(dict.fromkeys((grounding or {}).get("fields", ())))
    columns = [column for path in paths for column in (f"fields.{path}", f"fields.{path}.confidence")]
    return [*columns, "review"] if columns else []


def field_cells(grounding: Mapping[str, Any] | None) -> dict[str, Any]:
    """One job's cells for `field_columns`: each field's value and confidence, and its review flag."""
    if grounding is None:
        return {}
    cells: dict[str, Any] = {"review": grounding["review"]}
    for path, found in grounding["fields"].items():
        cells[f"fields.{path}"] = found["value"]
        cells[f"fields.{path}.confidence"] = found["confidence"]
    return cells


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """`attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded name>` (RFC 6266, RFC 8187).

    The fallback replaces what a quoted-string cannot carry safely (quotes, backslashes, controls such as CR, LF
    and NUL, "%" and any non-ASCII character) with "_"; `filename*` carries the exact name, which clients prefer.
    """
    fallback = _UNSAFE_FALLBACK.sub("_", filename).strip() or "download"
    exact = quote(filename, safe=_ATTR_CHARS, encoding="utf-8", errors="replace")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
