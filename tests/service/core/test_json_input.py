"""JSON from clients: parsed once, then walked once for depth, unpaired surrogates and non-finite numbers."""
import json

import pytest

from service.core import json_input
from service.core.json_input import JsonFault, fault, loads


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def test_depth_counts_containers_and_any_depth_is_walked_without_recursion():
    assert fault(nested(64)) is None
    assert fault(nested(65)) == JsonFault("a" + ".a" * 63, "nests deeper than 64 levels", too_deep=True)
    assert fault(nested(3), max_depth=2).too_deep
    deep = []
    for _ in range(100_000):  # far past Python's recursion limit: the walk holds iterators, not frames
        deep = [deep]
    assert fault(deep).too_deep
    wide = {"a": list(range(200_000)), "b": [[]] * 1000}
    assert fault(wide) is None


@pytest.mark.parametrize(("value", "path", "problem"), [
    ({"prompt": "a\ud800b"}, "prompt", "contains an unpaired surrogate (\\ud800-\\udfff)"),
    ({"messages": [{"content": [{}, {"text": "\udfff"}]}]}, "messages[0].content[1].text",
     "contains an unpaired surrogate (\\ud800-\\udfff)"),
    ({"metadata": {"k\ud800": 1}}, "metadata", "has a key with an unpaired surrogate (\\ud800-\\udfff)"),
    ({"k\ud800": 1}, "", "has a key with an unpaired surrogate (\\ud800-\\udfff)"),
    ({"max_tokens": float("inf")}, "max_tokens", "is not a finite number"),
    ({"a": [1.5, float("nan")]}, "a[1]", "is not a finite number"),
])
def test_the_first_unstorable_value_is_named_by_its_path(value, path, problem):
    assert fault(value) == JsonFault(path, problem)


def test_paired_surrogates_and_ordinary_text_pass():
    assert fault({"emoji": "\U0001F600 日本", "n": 1e308, "none": None, "flag": True}) is None
    assert fault(json.loads('{"emoji": "\\ud83d\\ude00"}')) is None  # a pair decodes to one character


def test_loads_refuses_nan_infinity_and_what_it_cannot_parse_for_depth():
    assert loads('{"a": [1, "x"]}') == {"a": [1, "x"]}
    assert loads(b'{"n": 1e400}') == {"n": float("inf")}  # valid JSON: `fault` is what refuses it
    for text in ('{"a": NaN}', "[Infinity]", "[-Infinity]", "{", b"\xff"):
        with pytest.raises(ValueError):
            loads(text)
    with pytest.raises(json_input.TooDeep, match="nests deeper than 64 levels"):
        loads("[" * 5000 + "]" * 5000)
