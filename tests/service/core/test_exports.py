"""CSV cells neutralised for spreadsheets, and download names in Content-Disposition (RFC 6266)."""
import csv
import io
import re
from urllib.parse import unquote

import pytest

from service.core.exports import content_disposition, csv_cell, csv_lines, field_cells, field_columns


@pytest.mark.parametrize(("value", "written"), [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ('=HYPERLINK("http://x.example","click")', '\'=HYPERLINK("http://x.example","click")'),
    ("+1+1", "'+1+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("a=b", "a=b"), ("", ""), (None, ""), (12, 12), (-3, -3), (1.5, 1.5),
])
def test_a_cell_that_a_spreadsheet_would_run_gets_a_leading_quote(value, written):
    assert csv_cell(value) == written


def test_csv_lines_stream_a_header_and_rows_through_csv_cell():
    rows = [{"custom_id": "=1+1", "text": "line\nbreak, \"quoted\"", "total_tokens": 7, "extra": "=x"},
            {"custom_id": "b", "text": None, "total_tokens": None}]
    chunks = list(csv_lines(["custom_id", "text", "total_tokens"], rows))
    assert len(chunks) == 3  # the header with the first row, the second row, and the (empty) rest
    read = list(csv.reader(io.StringIO("".join(chunks))))
    assert read == [["custom_id", "text", "total_tokens"], ["'=1+1", "line\nbreak, \"quoted\"", "7"], ["b", "", ""]]


@pytest.mark.parametrize("name", ["日本.jsonl", 'a"b.jsonl', "back\\slash.csv", "cr\rlf\nnul\x00.jsonl",
                                  "100%.txt", "plain.jsonl", "", " ;=,"])
def test_content_disposition_has_a_safe_ascii_fallback_and_the_exact_name(name):
    header = content_disposition(name)
    header.encode("ascii")  # a WSGI server sends header values as latin-1; ASCII is safe everywhere
    match = re.fullmatch(r'attachment; filename="([ -~]*)"; filename\*=UTF-8\'\'([A-Za-z0-9!#$&+\-.^_`|~%]*)',
                         header)
    assert match is not None, header
    fallback, exact = match.groups()
    assert not set(fallback) & set('"\\%\r\n\x00') and fallback
    assert unquote(exact, encoding="utf-8") == name


def test_grounded_fields_get_a_value_and_a_confidence_column_each_in_the_order_first_seen():
    def grounding(**fields):
        return {"fields": {path: {"value": value, "confidence": 0.5, "page": 1, "bbox": None, "grounded": True}
                           for path, value in fields.items()}, "review": False, "review_reasons": []}

    first = grounding(total=12.5, **{"line_items[0].amount": 3})
    second = grounding(vendor="=evil()", total=1.0)
    assert field_columns([None, first, second]) == [
        "fields.total", "fields.total.confidence", "fields.line_items[0].amount",
        "fields.line_items[0].amount.confidence", "fields.vendor", "fields.vendor.confidence", "review"]
    assert field_columns([None, None]) == []
    assert field_cells(None) == {}
    cells = field_cells(second)
    assert cells == {"review": False, "fields.vendor": "=evil()", "fields.vendor.confidence": 0.5,
                     "fields.total": 1.0, "fields.total.confidence": 0.5}
    [_, row] = list(csv.reader(io.StringIO("".join(csv_lines(field_columns([second]), [cells])))))
    assert row == ["'=evil()", "0.5", "1.0", "0.5", "False"]  # a value is a cell like any other: neutralised
