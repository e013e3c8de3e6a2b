"""The error-code enum is the one table of codes: README.md's tables follow it, and its statuses are HTTP's."""
from __future__ import annotations

import re
from http import HTTPStatus
from pathlib import Path

import pytest

from service.core.errors import JOB_CODES, ApiError, ErrorCode

README = Path(__file__).resolve().parents[3] / "README.md"


def _error_section() -> str:
    text = README.read_text()
    start = text.index("\n## Error codes\n")
    return text[start:text.index("\n## ", start + 1)]


def _readme_api_codes() -> dict[str, int]:
    """`code` -> status from the rows `| status | `code`[, `code`...] | when |` of the section."""
    codes: dict[str, int] = {}
    for status, names in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", _error_section(), flags=re.M):
        for name in re.findall(r"`(\w+)`", names):
            codes[name] = int(status)
    return codes


def _readme_job_codes() -> set[str]:
    """The codes of the job-failure table (`| `code` | meaning |`), less its "the same as a submit" row."""
    rows = re.findall(r"^\| (`[^|]+) \| [^|]+ \|$", _error_section(), flags=re.M)
    return {name for row in rows if "..." not in row for name in re.findall(r"`(\w+)`", row)}


def test_every_api_code_is_in_the_readme_with_its_status() -> None:
    documented = _readme_api_codes()
    expected = {code.value: code.status for code in ErrorCode if not code.job}
    assert documented == expected


def test_every_job_failure_code_is_in_the_readme() -> None:
    assert _readme_job_codes() == {code.value for code in JOB_CODES if code != ErrorCode.CANCELLED}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_each_code_has_a_real_http_status_and_a_description(code: ErrorCode) -> None:
    assert HTTPStatus(code.status).value >= 400
    assert code.when.endswith(".")
    assert re.fullmatch(r"[a-z0-9_]+", code.value)


def test_an_api_error_takes_its_status_from_its_code() -> None:
    error = ApiError(ErrorCode.JOB_ALREADY_FINISHED, "It ended.", {"job_id": "job_1"})
    assert (error.status, error.code) == (409, "job_already_finished")
    assert error.body() == {"error": {"code": "job_already_finished", "message": "It ended.",
                                      "details": {"job_id": "job_1"}}}
