"""Grounding: matching values to OCR words by meaning, choosing matches by row, confidence and review."""
import json
import math

import pytest

from service.core.grounding import Page, TokenTrace, Word, find, ground, iou, leaves, page_from_ocr


def _line(y: float, *words: str, confidence: float = 0.99) -> tuple[Word, ...]:
    """Words laid left to right on one line at height y (normalized), 0.1 wide each."""
    return tuple(Word(text, (0.1 * i, y, 0.1 * i + 0.09, y + 0.02), confidence) for i, text in enumerate(words))


INVOICE_P1 = Page(1, (
    _line(0.05, "ACME", "TOOLS", "GMBH"),
    _line(0.10, "Invoice", "No:", "INV-2024-0042"),
    _line(0.15, "Date:", "05.03.2024"),
    _line(0.30, "Hammer", "2", "x", "1.234,50"),
    _line(0.35, "Nails", "1", "x", "4.20"),
))
INVOICE_P2 = Page(2, (
    _line(0.30, "Nails", "3", "x", "12.60"),
    _line(0.80, "TOTAL", "EUR", "1.251,30", confidence=0.9),
))
SCHEMA = {"type": "object", "required": ["vendor", "date", "total", "line_items"], "properties": {
    "vendor": {"type": ["string", "null"]}, "invoice_number": {"type": ["string", "null"]},
    "date": {"type": ["string", "null"]}, "total": {"type": ["number", "null"]},
    "line_items": {"type": "array", "items": {"type": "object", "required": ["description", "quantity", "amount"],
                                              "properties": {"description": {"type": "string"},
                                                             "quantity": {"type": "number"},
                                                             "amount": {"type": "number"}}}}}}


def test_a_value_is_found_on_its_page_with_a_tight_box():
    [match] = find(1251.3, [INVOICE_P1, INVOICE_P2])
    assert match.page == 2 and match.similarity == 1.0 and match.ocr_confidence == 0.9
    assert match.box == pytest.approx((0.2, 0.8, 0.29, 0.82))  # the amount's word only, not "EUR" or "TOTAL"
    [vendor] = find("Acme Tools GmbH", [INVOICE_P1, INVOICE_P2])
    assert vendor.page == 1 and vendor.box == pytest.approx((0.0, 0.05, 0.29, 0.07))
    assert find("Nowhere Ltd", [INVOICE_P1, INVOICE_P2]) == []


def test_engine_lines_become_normalized_words_with_or_without_word_boxes():
    line = {"text": "TOTAL 12.40", "box": [[100, 50], [320, 50], [320, 70], [100, 70]], "confidence": 0.95}
    page = page_from_ocr(3, 400, 100, [line])
    assert page.number == 3 and [w.text for w in page.lines[0]] == ["TOTAL", "12.40"]
    assert page.lines[0][1].box == pytest.approx((0.25 + 0.55 * 6 / 11, 0.5, 0.8, 0.7))
    with_words = {**line, "words": [{"text": "12.40", "box": [[250, 52], [318, 52], [318, 69], [250, 69]],
                                     "confidence": 0.9}]}
    [[word]] = page_from_ocr(1, 400, 100, [with_words]).lines
    assert word.box == pytest.approx((0.625, 0.52, 0.795, 0.69)) and word.confidence == 0.9


def test_leaves_carry_paths_requiredness_rows_and_their_spans_in_the_output_text():
    parsed = {"vendor": "Acme", "invoice_number": None, "total": 12.5,
              "line_items": [{"description": "Nails", "quantity": 1, "amount": 4.2}]}
    text = json.dumps(parsed, indent=1)  # spans must not depend on the output's whitespace
    found = {leaf.path: leaf for leaf in leaves(parsed, SCHEMA, text)}
    assert list(found) == ["vendor", "invoice_number", "total", "line_items[0].description",
                           "line_items[0].quantity", "line_items[0].amount"]
    assert found["vendor"].required and not found["invoice_number"].required
    assert found["line_items[0].amount"].required and found["line_items[0].amount"].row == "line_items[0]"
    for leaf in found.values():
        start, end = leaf.span
        assert text[start:end] == ("null" if leaf.value is None else str(leaf.value))
    assert all(leaf.span is None for leaf in leaves(parsed, SCHEMA, "{not json"))


def test_line_item_cells_are_chosen_on_their_rows_line_across_pages():
    parsed = {"vendor": "ACME Tools GmbH", "invoice_number": "INV-2024-0042", "date": "2024-03-05", "total": 1251.3,
              "line_items": [{"description": "Hammer", "quantity": 2, "amount": 1234.5},
                             {"description": "Nails", "quantity": 1, "amount": 4.2},
                             {"description": "Nails", "quantity": 3, "amount": 12.6}]}
    result = ground(parsed, SCHEMA, [INVOICE_P1, INVOICE_P2])
    fields = result["fields"]
    assert all(f["grounded"] for f in fields.values()), fields
    assert fields["date"]["page"] == 1 and fields["total"]["page"] == 2
    # "Nails" is on both pages: each row's description goes where its amount is, and so does its quantity.
    assert fields["line_items[1].description"]["page"] == 1 and fields["line_items[2].description"]["page"] == 2
    assert fields["line_items[1].quantity"]["bbox"][1] == pytest.approx(0.35)
    assert fields["line_items[2].quantity"]["page"] == 2
    # Without logprobs the confidence is the OCR agreement alone.
    assert fields["total"]["confidence"] == 0.9 and fields["vendor"]["confidence"] == 0.99
    assert result["review"] is False and result["review_reasons"] == []


def test_review_flags_required_fields_that_are_ungrounded_or_unsure():
    parsed = {"vendor": "Invented Corp", "invoice_number": "NOT-THERE", "date": None, "total": 1251.3,
              "line_items": []}
    result = ground(parsed, SCHEMA, [INVOICE_P1, INVOICE_P2], review_confidence=0.95)
    assert result["fields"]["vendor"] == {"value": "Invented Corp", "confidence": 0.0, "page": None, "bbox": None,
                                          "grounded": False}
    assert result["review"] is True
    # invoice_number is not required; a null date is an answer (the field is nullable), not a missing value.
    assert result["review_reasons"] == [{"field": "vendor", "reason": "ungrounded", "confidence": 0.0},
                                        {"field": "total", "reason": "low_confidence", "confidence": 0.9}]
    assert ground(parsed, SCHEMA, [INVOICE_P1, INVOICE_P2], review_confidence=0.5)["review_reasons"] == [
        {"field": "vendor", "reason": "ungrounded", "confidence": 0.0}]


def test_confidence_averages_the_value_tokens_probability_and_the_ocr_agreement():
    text = '{"vendor":"ACME Tools GmbH","total":1251.3}'
    # Tokens: '{"vendor":"' | 'ACME' | ' Tools GmbH' | '","total":' | '1251' | '.3' | '}'
    ends, logprobs, pos = [], [], 0
    for piece, logprob in (('{"vendor":"', 0.0), ("ACME", math.log(0.5)), (" Tools GmbH", math.log(0.8)),
                           ('","total":', 0.0), ("1251", math.log(0.9)), (".3", math.log(0.4)), ("}", 0.0)):
        pos += len(piece)
        ends.append(pos)
        logprobs.append(logprob)
    trace = TokenTrace(ends=ends, logprobs=logprobs)
    fields = ground(json.loads(text), SCHEMA, [INVOICE_P1, INVOICE_P2], text=text, trace=trace)["fields"]
    vendor_model, total_model = math.sqrt(0.5 * 0.8), math.sqrt(0.9 * 0.4)
    assert fields["vendor"]["confidence"] == round((vendor_model + 0.99) / 2, 3)
    assert fields["total"]["confidence"] == round((total_model + 0.9) / 2, 3)
    ungrounded = ground({"vendor": "Nobody"}, SCHEMA, [], text='{"vendor":"Nobody"}',
                        trace=TokenTrace(ends=[11, 17, 19], logprobs=[0.0, 0.0, 0.0]))["fields"]["vendor"]
    assert ungrounded["confidence"] == 0.5 and not ungrounded["grounded"]  # a sure model, no OCR support


def test_iou():
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 1, 1), (0.5, 0, 1.5, 1)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_a_label_glued_to_its_value_by_ocr_still_leaves_the_value_its_own_box():
    line = {"text": "Date:05/03/2024", "box": [[0, 0], [150, 0], [150, 10], [0, 10]], "confidence": 0.98}
    page = page_from_ocr(1, 300, 100, [line])
    assert [w.text for w in page.lines[0]] == ["Date:", "05/03/2024"]
    [match] = find("2024-03-05", [page])
    assert match.box == pytest.approx((0.5 * 5 / 15, 0.0, 0.5, 0.1))  # its share of the line: 10 of 15 characters
    assert [w.text for w in page_from_ocr(1, 9, 9, [{**line, "text": "12:30 Tax:"}]).lines[0]] == ["12:30", "Tax:"]


def test_a_line_item_cell_far_from_its_row_loses_agreement_and_on_another_page_is_ungrounded():
    page_1 = Page(1, (_line(0.30, "Hammer", "7", "x", "19.99"), _line(0.50, "Note:", "bring", "2", "copies")))
    page_2 = Page(2, (_line(0.90, "Page", "3"),))
    parsed = {"line_items": [{"description": "Hammer", "quantity": 2, "amount": 19.99},
                             {"description": "Hammer", "quantity": 3, "amount": 19.99}]}
    fields = ground(parsed, SCHEMA, [page_1, page_2])["fields"]
    near = fields["line_items[0].quantity"]  # "2" is printed 0.2 page heights below the row: 0.99 - 2 x 0.2
    assert near["grounded"] and near["bbox"][1] == pytest.approx(0.50) and near["confidence"] == 0.59
    assert fields["line_items[1].quantity"]["grounded"] is False  # "3" is only on page 2, the row on page 1
    assert fields["line_items[1].amount"]["grounded"] and fields["line_items[1].amount"]["confidence"] == 0.99
