"""JSON from clients, parsed once and checked once: nothing VLQ stores or hands on may nest without bound, hold an
unpaired surrogate (no UTF-8 encoder, database or broker takes one) or a non-finite number (Postgres JSON refuses
NaN and Infinity, SQLite takes them, so the two would disagree).

`loads` parses text (refusing NaN/Infinity and recursion the parser cannot finish); `fault` walks a parsed value
without recursion and says where the first problem is. The API's body reader and every form field that carries
JSON text use both, so a request gets a 400 before anything deep or unencodable reaches pydantic, jsonschema,
the database or a log line.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64  # the default of the `max_json_depth` setting
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_PATH = 200  # a path in an error message is cut here (keys are the client's and may be long)


@dataclass(frozen=True)
class JsonFault:
    """Where a parsed value breaks a rule: `path` ("" for the whole value), what is wrong, and whether it is depth."""

    path: str
    problem: str
    too_deep: bool = False


class TooDeep(ValueError):
    """JSON text nested deeper than the parser can follow."""


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`text` parsed as JSON; ValueError if it is not JSON (NaN and Infinity included), TooDeep if it nests too deep
    to parse at all (deep values that do parse are `fault`'s to find)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise TooDeep(f"nests deeper than {max_depth} levels") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def has_surrogate(text: str) -> bool:
    """True if `text` holds an unpaired surrogate (U+D800-U+DFFF), which no UTF-8 encoder accepts."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def fault(value: Any, max_depth: int = MAX_DEPTH) -> JsonFault | None:
    """The first place where `value` (parsed JSON) nests deeper than `max_depth` containers, holds a string or key
    with an unpaired surrogate, or a non-finite number; None if there is none.

    Iterative, holding one iterator per open container: any depth and any width cost O(depth) memory.
    """
    stack: list[Iterator[tuple[Any, Any]]] = []  # the open containers' (key, child) iterators
    trail: list[Any] = []  # the key of the child being walked in each open container
    item = value
    while True:
        if isinstance(item, dict | list):
            if len(stack) >= max_depth:
                return JsonFault(_path(trail), f"nests deeper than {max_depth} levels", too_deep=True)
            stack.append(iter(item.items()) if isinstance(item, dict) else enumerate(item))
            trail.append(None)
        elif isinstance(item, str) and has_surrogate(item):
            return JsonFault(_path(trail), "contains an unpaired surrogate (\\ud800-\\udfff)")
        elif isinstance(item, float) and not math.isfinite(item):
            return JsonFault(_path(trail), "is not a finite number")
        while stack:
            step = next(stack[-1], None)
            if step is not None:
                break
            stack.pop()
            trail.pop()
        else:
            return None
        key, item = step
        if isinstance(key, str) and has_surrogate(key):
            return JsonFault(_path(trail[:-1]), "has a key with an unpaired surrogate (\\ud800-\\udfff)")
        trail[-1] = key


def _path(trail: list[Any]) -> str:
    """`messages[0].content` from ["messages", 0, "content"], cut at _MAX_PATH characters."""
    path = ""
    for key in trail:
        path += f"[{key}]" if isinstance(key, int) else f".{key}" if path else str(key)
        if len(path) > _MAX_PATH:
            return path[:_MAX_PATH]
    return path
