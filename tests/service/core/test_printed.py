"""Printed values compared by meaning: amounts, dates and text as OCR reads them."""
from datetime import date

import pytest

from service.core.printed import parse_amount, parse_date, similarity


@pytest.mark.parametrize(("printed", "number"), [
    ("1,234.50", 1234.5), ("1.234,50", 1234.5), ("1234.5", 1234.5), ("$1,234.50", 1234.5), ("1234,50 EUR", 1234.5),
    ("USD 12.40", 12.4), ("(12.00)", -12.0), ("1,234", 1234.0), ("0.99", 0.99), ("42", 42.0), ("€7", 7.0),
])
def test_amounts_parse_whatever_their_format(printed, number):
    assert parse_amount(printed) == pytest.approx(number)


@pytest.mark.parametrize("printed", ["TOTAL", "2024-05-05", "INV-2024-0042", "1,234,56", "", "x", "12a"])
def test_what_is_not_an_amount_parses_as_none(printed):
    assert parse_amount(printed) is None


@pytest.mark.parametrize(("printed", "dates"), [
    ("2024-03-05", {date(2024, 3, 5)}), ("05.03.2024", {date(2024, 3, 5), date(2024, 5, 3)}),
    ("5/3/24", {date(2024, 3, 5), date(2024, 5, 3)}), ("25/12/2024", {date(2024, 12, 25)}),
    ("5 March 2024", {date(2024, 3, 5)}), ("Mar 5, 2024", {date(2024, 3, 5)}), ("05-Mar-2024", {date(2024, 3, 5)}),
    ("2024-02-30", set()), ("hello", set()), ("12.40", set()),
])
def test_dates_parse_to_every_date_they_can_mean(printed, dates):
    assert parse_date(printed) == frozenset(dates)


@pytest.mark.parametrize(("value", "printed", "matches"), [
    (1234.5, "1,234.50", True), (1234.5, "1.234,50", True), (1234.5, "1234.51", False), (2, "2", True),
    ("2024-03-05", "05/03/2024", True), ("2024-03-05", "March 5, 2024", True), ("2024-03-05", "2024-03-06", False),
    ("ACME Tools GmbH", "ACME TOOLS GMBH", True), ("Acme  Tools", "acme tools.", True),
    ("INV-2024-0042", "INV 2024 0042", True), ("Corner Grocery", "Comer Grocery", True),  # an OCR misread
    ("Corner Grocery", "City Books", False), ("12.40", "12.4", True), ("12.40", "12.41", False), (True, "true", False),
])
def test_similarity_compares_meaning_not_characters(value, printed, matches):
    assert (similarity(value, printed) > 0) is matches
