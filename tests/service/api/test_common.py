"""HTTP-only request shapes: list queries (pagination and filters) and uploads, read with the one error body."""
import io

import pytest

from service.api.common import PageQuery
from service.api.files import FileList
from service.api.jobs import JobList
from service.api.webhooks import DeliveryList
from service.core.errors import ApiError
from service.core.validation import parse


def refused(model, values) -> dict:
    with pytest.raises(ApiError) as caught:
        parse(model, values)
    return caught.value.body()["error"]


def test_a_page_reads_the_query_string_text():
    page = parse(PageQuery, {"limit": "5", "after": "job_1"})
    assert (page.limit, page.cursor, page.after) == (5, None, "job_1")
    assert parse(PageQuery, {"cursor": ""}).cursor is None
    assert refused(PageQuery, {"limit": "0"}) == {
        "code": "invalid_field", "message": "'limit' must be between 1 and 100.", "details": {"field": "limit"}}
    assert refused(PageQuery, {"cursor": "x" * 65})["details"] == {"field": "cursor"}
    assert parse(FileList, {"limit": "10000"}).limit == 10_000
    assert refused(FileList, {"limit": "10001"})["message"] == "'limit' must be between 1 and 10000."


def test_list_filters_refuse_what_is_not_a_value_of_theirs():
    assert refused(JobList, {"status": "done"})["message"] == (
        "'status' must be one of queued, running, succeeded, failed, cancelled.")
    assert parse(DeliveryList, {"job_id": "job_1", "status": "failed"}).status == "failed"


def test_an_upload_must_be_a_file(client):
    no_file = client.post("/v1/files", data={"purpose": "batch"}, content_type="multipart/form-data")
    assert no_file.get_json()["error"] == {"code": "missing_field", "message": "'file' is required (multipart).",
                                           "details": {"field": "file"}}
    as_text = client.post("/v1/files", data={"purpose": "batch", "file": "not a file"},
                          content_type="multipart/form-data")
    assert as_text.get_json()["error"]["code"] == "missing_field"
    no_purpose = client.post("/v1/files", data={"file": (io.BytesIO(b"{}\n"), "in.jsonl")},
                             content_type="multipart/form-data")
    assert no_purpose.get_json()["error"] == {"code": "missing_field", "message": "'purpose' is required.",
                                              "details": {"field": "purpose"}}
