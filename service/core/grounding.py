"""Grounded fields: where each extracted value is on its document's pages, and how sure VLQ is of it.

An extraction job's output (JSON valid against its schema) is flattened into fields, one per scalar value
(`vendor`, `line_items[2].amount`, `address.city`). Each non-null value is looked for among the OCR engine's
words on every page of the document; a match gives the field its page and a box (normalized 0-1 page coordinates,
`[x0, y0, x1, y1]`), and `grounded: true`. Matching is by meaning, not by characters: amounts compare as numbers
(`1,234.50`, `1.234,50`, `$1234.5` and `1234.5` are one value), ISO dates compare as dates against the usual
printed forms (`05/03/2024`, `5 March 2024`, `Mar 5, 2024`...), and text compares case- and
punctuation-insensitively, with a small tolerance for OCR misreads in letters (service.core.printed).

Confidence (0-1) combines two independent signals:

    model = exp(mean log-probability of the output tokens that spell the value)   (the geometric-mean token
            probability: how sure the model was, from the engine's own logprobs)
    ocr   = match similarity x OCR word confidence, 0 when the value is not on any page; for a line-item cell,
            less 2 x its distance from its row's line (in page heights), and 1 on another page than its row
    confidence = (model + ocr) / 2, or ocr alone when the engine gave no logprobs

so an ungrounded value never scores above 0.5, and a grounded one the model was sure of scores near 1.
A null value (the model says the field is absent) gets `model` as its confidence and is not grounded.

A job needs review when a required field (required at every level of the schema, line-item cells included)
holds a value that is ungrounded or whose confidence is below the threshold (`review_confidence` in settings).
"""
from __future__ import annotations

import math
import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json import JSONDecoder
from typing import Any

from service.core.printed import similarity

_MAX_EXTRA_WORDS = 2  # an OCR span may hold this many more words than the value (labels, currency signs)
_ROW_DISTANCE_WEIGHT = 2.0  # line-item cells: score lost per page height of vertical distance from their row
_OTHER_PAGE_PENALTY = 1.0  # line-item cells: score lost for a cell found on another page than its row

Box = tuple[float, float, float, float]  # x0, y0, x1, y1, normalized to the page


@dataclass(frozen=True)
class Word:
    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class Page:
    """One page's OCR: its 1-based number and its words, line by line, in reading order."""

    number: int
    lines: tuple[tuple[Word, ...], ...]

    @property
    def text(self) -> str:
        return "\n".join(" ".join(word.text for word in line) for line in self.lines)


@dataclass(frozen=True)
class TokenTrace:
    """The generated tokens: where each ends in the output text (character offset), and its log-probability."""

    ends: Sequence[int]
    logprobs: Sequence[float]


@dataclass(frozen=True)
class Match:
    page: int
    box: Box
    similarity: float  # 1.0: the same value; less: text that differs by a few characters
    ocr_confidence: float

    @property
    def score(self) -> float:
        return self.similarity * self.ocr_confidence


@dataclass
class Leaf:
    path: str
    value: Any
    required: bool
    row: str | None  # the array element it belongs to (`line_items[0]`), for choosing matches by row
    span: tuple[int, int] | None = None  # the value's characters in the output text
    candidates: list[Match] = field(default_factory=list)
    chosen: Match | None = None
    agreement: float = 0.0  # the chosen match's score, less its distance from its row for a line-item cell


def page_from_ocr(number: int, width: int, height: int, lines: Sequence[Mapping[str, Any]]) -> Page:
    """A Page from the rapidocr engine's lines (`{text, box: 4 corner points in pixels, confidence, words?}`).

    A line without word boxes is split at spaces, each word's box taken as its share of the line's characters.
    """
    page_lines = []
    for line in lines:
        words = line.get("words")
        if words:
            page_lines.append(tuple(piece for w in words for piece in _split_line(
                str(w["text"]), _normalize(w["box"], width, height), float(w["confidence"]))))
        else:
            page_lines.append(_split_line(str(line["text"]), _normalize(line["box"], width, height),
                                          float(line["confidence"])))
    return Page(number=number, lines=tuple(line for line in page_lines if line))


def _normalize(points: Sequence[Sequence[float]], width: int, height: int) -> Box:
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    clamp = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    return clamp(min(xs) / width), clamp(min(ys) / height), clamp(max(xs) / width), clamp(max(ys) / height)


# A word: no spaces, and a label's colon ends it (OCR often reads "Date: 05/03/2024" as one word "Date:05/03/2024").
_WORD = re.compile(r"[^\s]+?(?:[A-Za-z]:(?=\S)|(?=\s)|$)")


def _split_line(text: str, box: Box, confidence: float) -> tuple[Word, ...]:
    """Text read as one box, split into words, each box its share of the text's characters."""
    total = max(len(text), 1)
    x0, y0, x1, y1 = box
    return tuple(Word(m.group(), (x0 + (x1 - x0) * m.start() / total, y0, x0 + (x1 - x0) * m.end() / total, y1),
                      confidence) for m in _WORD.finditer(text))


def find(value: Any, pages: Sequence[Page]) -> list[Match]:
    """Every span of OCR words, on every page, that stands for `value`; each span is words of one line."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = 1
    else:
        size = max(len(str(value).split()), 1)
    matches = []
    for page in pages:
        for words in page.lines:
            for start in range(len(words)):
                for end in range(start + 1, min(start + size + _MAX_EXTRA_WORDS, len(words)) + 1):
                    span = words[start:end]
                    score = similarity(value, " ".join(w.text for w in span))
                    if score > 0:
                        matches.append(Match(page=page.number, box=_union(w.box for w in span), similarity=score,
                                             ocr_confidence=min(w.confidence for w in span)))
    return _tightest(matches)


def _tightest(matches: list[Match]) -> list[Match]:
    """Of overlapping spans with the same score (`12.40` and `USD 12.40`), keep the smallest box."""
    kept: list[Match] = []
    for match in sorted(matches, key=lambda m: (-m.score, _area(m.box))):
        if not any(k.page == match.page and k.score >= match.score and _overlaps(k.box, match.box) for k in kept):
            kept.append(match)
    return kept


def _union(boxes: Iterator[Box]) -> Box:
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return min(x0s), min(y0s), max(x1s), max(y1s)


def _area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


# ---- the output's fields ---------------------------------------------------------------------------------------

def leaves(parsed: Any, schema: Mapping[str, Any] | None, text: str | None = None) -> list[Leaf]:
    """The output's scalar values, in order, with their path, whether the schema requires them, and (given the
    output text) where each is spelled in it."""
    spans = dict(_spans(text)) if text else {}
    out: list[Leaf] = []
    _walk(parsed, schema or {}, "", True, None, out)
    for leaf in out:
        leaf.span = spans.get(leaf.path)
    return out


def _walk(value: Any, schema: Mapping[str, Any], path: str, required: bool, row: str | None, out: list[Leaf]) -> None:
    if isinstance(value, dict):
        needed = set(schema.get("required", ()))
        properties = schema.get("properties", {})
        for key, sub in value.items():
            _walk(sub, properties.get(key, {}), f"{path}.{key}" if path else key, required and key in needed,
                  row, out)
    elif isinstance(value, list):
        items = schema.get("items", {})
        for index, sub in enumerate(value):
            here = f"{path}[{index}]"
            _walk(sub, items if isinstance(items, Mapping) else {}, here, required, here, out)
    else:
        out.append(Leaf(path=path, value=value, required=required, row=row))


def _spans(text: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """(path, (start, end)) for every scalar in a JSON text; strings' spans exclude their quotes."""
    decoder = JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def value(i: int, path: str) -> Generator[tuple[str, tuple[int, int]], None, int]:
        i = skip(i)
        if text[i] == "{":
            i = skip(i + 1)
            while text[i] != "}":
                key, i = decoder.raw_decode(text, i)
                i = skip(skip(i) + 1)  # past ":"
                i = yield from value(i, f"{path}.{key}" if path else key)
                i = skip(i)
                i = skip(i + 1) if text[i] == "," else i
            return i + 1
        if text[i] == "[":
            i, index = skip(i + 1), 0
            while text[i] != "]":
                i = yield from value(i, f"{path}[{index}]")
                index, i = index + 1, skip(i)
                i = skip(i + 1) if text[i] == "," else i
            return i + 1
        _, end = decoder.raw_decode(text, i)
        yield path, ((i + 1, end - 1) if text[i] == '"' else (i, end))
        return end

    try:
        yield from value(0, "")
    except (ValueError, IndexError):
        return  # not the JSON it should be: the fields get no token-based confidence


# ---- grounding ---------------------------------------------------------------------------------------------------

def ground(parsed: Any, schema: Mapping[str, Any] | None, pages: Sequence[Page], *, text: str | None = None,
           trace: TokenTrace | None = None, review_confidence: float = 0.0) -> dict[str, Any]:
    """`{fields: {path: {value, confidence, page, bbox, grounded}}, review, review_reasons}` for a parsed output."""
    found = leaves(parsed, schema, text)
    for leaf in found:
        if leaf.value is not None:
            leaf.candidates = find(leaf.value, pages)
    _choose(found)
    fields, reasons = {}, []
    for leaf in found:
        confidence = _confidence(leaf, _model_confidence(leaf.span, trace))
        fields[leaf.path] = {"value": leaf.value, "confidence": confidence,
                             "page": leaf.chosen.page if leaf.chosen else None,
                             "bbox": [round(v, 4) for v in leaf.chosen.box] if leaf.chosen else None,
                             "grounded": leaf.chosen is not None}
        if leaf.required and leaf.value is not None:
            if leaf.chosen is None:
                reasons.append({"field": leaf.path, "reason": "ungrounded", "confidence": confidence})
            elif confidence is not None and confidence < review_confidence:
                reasons.append({"field": leaf.path, "reason": "low_confidence", "confidence": confidence})
    return {"fields": fields, "review": bool(reasons), "review_reasons": reasons}


def _confidence(leaf: Leaf, model: float | None) -> float | None:
    """The formula in the module's docstring; None for a null value when the engine gave no logprobs."""
    if leaf.value is None:
        return None if model is None else round(model, 3)
    ocr = leaf.agreement if leaf.chosen else 0.0
    return round(ocr if model is None else (model + ocr) / 2, 3)


def _choose(found: list[Leaf]) -> None:
    """Pick each value's match: the best-scoring one; a line-item cell prefers the line its row is on."""
    rows: dict[str | None, list[Leaf]] = {}
    for leaf in found:
        if leaf.candidates:
            rows.setdefault(leaf.row, []).append(leaf)
    for row, cells in rows.items():
        if row is None:
            for leaf in cells:
                leaf.chosen = max(leaf.candidates, key=_first_best)
                leaf.agreement = leaf.chosen.score
        else:
            _choose_row(cells)


def _first_best(match: Match) -> tuple[float, int, float]:
    """The best score (to two decimals: OCR confidences of 0.998 and 0.999 are the same evidence), then the first
    place in reading order: a header value printed twice (a currency by the total too) is read where it first is."""
    return round(match.score, 2), -match.page, -match.box[1]


def _choose_row(cells: list[Leaf]) -> None:
    """The anchor is the cell whose value is most specific (fewest places it could be); of its places, the one
    where the row's other cells fit best (a product listed twice is told apart by its amount)."""
    anchor = min(cells, key=lambda leaf: len(leaf.candidates))
    others = [leaf for leaf in cells if leaf is not anchor]

    def fit(place: Match) -> float:
        return place.score + sum(max(m.score - _row_cost(m, place) for m in leaf.candidates) for leaf in others)

    place = max(anchor.candidates, key=fit)
    anchor.chosen, anchor.agreement = place, place.score
    for leaf in others:
        best = max(leaf.candidates, key=lambda m: m.score - _row_cost(m, place))
        # A cell printed nowhere near its row (a quantity "1" found only in a footer) is not grounded by it.
        agreement = best.score - _row_cost(best, place)
        leaf.chosen, leaf.agreement = (best, agreement) if agreement > 0 else (None, 0.0)


def _row_cost(match: Match, anchor: Match) -> float:
    if match.page != anchor.page:
        return _OTHER_PAGE_PENALTY
    return _ROW_DISTANCE_WEIGHT * abs((match.box[1] + match.box[3]) / 2 - (anchor.box[1] + anchor.box[3]) / 2)


def _model_confidence(span: tuple[int, int] | None, trace: TokenTrace | None) -> float | None:
    """exp(mean logprob) of the tokens that overlap the value's characters; None without a trace."""
    if span is None or trace is None or not trace.ends:
        return None
    start, end = span
    if end <= start:  # an empty string: the token that closes it carries the decision
        end = start + 1
    logprobs, begin = [], 0
    for token_end, logprob in zip(trace.ends, trace.logprobs, strict=False):
        if token_end > start and begin < end:
            logprobs.append(logprob)
        begin = token_end
        if begin >= end:
            break
    if not logprobs:
        return None
    return math.exp(sum(logprobs) / len(logprobs))
