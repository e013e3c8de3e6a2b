"""Printed values compared by meaning: amounts as numbers, dates as dates, text without case or punctuation.

`similarity(value, printed)` says how well OCR text stands for an extracted value (1.0 the same, 0 different):
`1,234.50`, `1.234,50`, `$1234.5` and `1234.5` are one amount; `2024-03-05` is printed `05/03/2024`,
`5 March 2024` or `Mar 5, 2024`; text tolerates a misread letter (similarity >= MIN_TEXT_SIMILARITY) but never
other digits. Parsers are cached: grounding compares every OCR span on a page with every value.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata
from datetime import date
from difflib import SequenceMatcher
from typing import Any

MIN_TEXT_SIMILARITY = 0.8  # below this, a text value and an OCR span are different strings
_CURRENCY = re.compile(r"^(?:[A-Za-z]{3}|[$€£¥₹]|[A-Za-z]{1,3}[$€£¥])\s*|\s*(?:[A-Za-z]{3}|[$€£¥₹])$")
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:([,. '\u2009\u00a0])\d{3})+(?:([.,])\d+)?$")
_PLAIN = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")
_MONTHS = {name: index for index, names in enumerate((
    ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
    ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
    ("dec", "december")), 1) for name in names}
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_NON_DIGITS = re.compile(r"\D")


@functools.lru_cache(maxsize=65536)  # every OCR span is compared with every value: parse each span once
def parse_amount(text: str) -> float | None:
    """The number an amount as printed stands for (`$1,234.50`, `1.234,50 EUR`, `1 234,5`, `(12.00)`), or None."""
    text = text.strip().strip(":;")
    negative = text.startswith("(") and text.endswith(")")
    text = _CURRENCY.sub("", text.strip("()")).strip()
    if not text or not any(c.isdigit() for c in text):
        return None
    grouped = _GROUPED.match(text)
    if grouped:
        separator, decimal = grouped.group(1), grouped.group(2)
        if decimal == separator:  # "1,234,567" read as grouping only... unless the "group" is really a decimal
            return None
        digits = text.replace(separator, "")
        number = float(digits.replace(decimal, ".") if decimal else digits)
    elif _PLAIN.match(text):
        number = float(text.replace(",", "."))
    else:
        return None
    return -number if negative else number


@functools.lru_cache(maxsize=65536)
def parse_date(text: str) -> frozenset[date]:
    """Every date a printed date can mean (`03/05/2024` is both 3 May and 5 March); empty if it is not one."""
    text = text.strip().strip(".,:;").lower()
    found: frozenset[date] = frozenset()
    numbers = re.fullmatch(r"(\d{1,4})[-/.](\d{1,2})[-/.](\d{1,4})", text)
    if numbers:
        a, b, c = (int(part) for part in numbers.groups())
        if len(numbers.group(1)) == 4:
            found |= _dates((a, b, c))
        elif len(numbers.group(3)) in (2, 4):
            year = c if c >= 100 else 2000 + c
            found |= _dates((year, b, a)) | _dates((year, a, b))
        return found
    words = re.findall(r"[a-z]+|\d+", text)
    months = [_MONTHS[w] for w in words if w in _MONTHS]
    digits = [int(w) for w in words if w.isdigit()]
    if len(months) == 1 and len(digits) == 2 and len(words) == 3:
        day, year = (digits[0], digits[1]) if digits[1] > 31 else (digits[1], digits[0])
        found |= _dates((year if year >= 100 else 2000 + year, months[0], day))
    return found


def _dates(parts: tuple[int, int, int]) -> frozenset[date]:
    try:
        return frozenset({date(*parts)})
    except ValueError:
        return frozenset()


@functools.lru_cache(maxsize=65536)
def normalize_text(text: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form of a text value, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def similarity(value: Any, printed: str) -> float:
    """How well `printed` (OCR text) stands for `value`: 1.0 the same, 0 different; text tolerates misreads."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        amount = parse_amount(printed)
        return 1.0 if amount is not None and math.isclose(amount, value, abs_tol=0.005) else 0.0
    text = str(value)
    iso = _ISO_DATE.match(text.strip())
    if iso and _dates(tuple(int(p) for p in iso.groups())) & parse_date(printed):  # type: ignore[arg-type]
        return 1.0
    amount = parse_amount(text)
    if amount is not None and any(c.isdigit() for c in text):
        printed_amount = parse_amount(printed)
        if printed_amount is not None:
            return 1.0 if math.isclose(amount, printed_amount, abs_tol=0.005) else 0.0
    a, b = normalize_text(text), normalize_text(printed)
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    if 2 * min(len(a), len(b)) < MIN_TEXT_SIMILARITY * (len(a) + len(b)):
        return 0.0  # the lengths alone put the ratio below the bar
    if _NON_DIGITS.sub("", a) != _NON_DIGITS.sub("", b):
        return 0.0  # a misread letter is tolerated; other digits are another number, date or reference
    ratio = SequenceMatcher(None, a, b, autojunk=False).ratio()
    return ratio if ratio >= MIN_TEXT_SIMILARITY else 0.0
