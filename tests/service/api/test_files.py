"""Files: upload names are stored only if they can be, and every name downloads with an RFC 6266 header."""
import io
import json
from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
from sqlalchemy import update

from service.core.models import File, utcnow


def upload(client, name: str, content: bytes = b'{"a": 1}\n'):
    """POST /v1/files with the name sent as RFC 2231 `filename*` (how CR, LF or NUL reach a server at all)."""
    boundary = "vlq-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''{quote(name)}\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return client.post("/v1/files", input_stream=io.BytesIO(body), content_length=len(body),
                       content_type=f"multipart/form-data; boundary={boundary}")


@pytest.mark.parametrize("name", ["日本.jsonl", 'quote"d.jsonl', "back\\slash.jsonl", "100%.jsonl", "a;b=c,d.jsonl",
                                  "emoji \U0001F600.jsonl"])
def test_any_storable_name_uploads_and_downloads_with_filename_star(client, name):
    created = upload(client, name)
    assert created.status_code == 200, created.get_data(as_text=True)
    file = created.get_json()
    assert file["filename"] == name
    response = client.get(f"/v1/files/{file['id']}/content")
    assert response.status_code == 200 and response.get_data() == b'{"a": 1}\n'
    disposition = response.headers["Content-Disposition"]
    disposition.encode("ascii")
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert not set(fallback) & set('"\\%') and fallback.isascii()
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name
    assert response.headers["Content-Type"].startswith("application/jsonl")
    client.delete(f"/v1/files/{file['id']}")


@pytest.mark.parametrize("name", ["a\rb.jsonl", "a\nb.jsonl", "a\r\nContent-Type: text/html.jsonl", "a\x00b.jsonl",
                                  "tab\there.jsonl", "n" * 256])
def test_a_name_with_control_characters_or_too_long_is_refused_at_upload(client, name):
    response = upload(client, name)
    error = response.get_json()["error"]
    assert (response.status_code, error["code"], error["details"]["field"]) == (400, "invalid_field", "file"), error
    assert name not in response.get_data(as_text=True)  # the name is not echoed back


def _upload(client, **fields):
    return client.post("/v1/files", data={"purpose": "batch", "file": (io.BytesIO(b"{}\n"), "in.jsonl"), **fields})


@pytest.mark.parametrize("fields", [
    {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},  # as the openai SDK sends it
    {"expires_after": json.dumps({"anchor": "created_at", "seconds": 3600})},
])
def test_expires_after_sets_the_files_expires_at(client, fields):
    file = _upload(client, **fields).get_json()
    assert file["expires_at"] == file["created_at"] + 3600
    assert client.get(f"/v1/files/{file['id']}").get_json()["expires_at"] == file["expires_at"]
    assert _upload(client).get_json()["expires_at"] is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after.anchor"),
    ({"expires_after[days]": "1", "expires_after[anchor]": "created_at"}, "expires_after.days"),
    ({"expires_after": "in an hour"}, "expires_after"),
    ({"expires_after": "[3600]"}, "expires_after"),
])
def test_a_bad_expires_after_is_a_400_naming_the_field(client, fields, field):
    response = _upload(client, **fields)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["details"]["field"]) == ("invalid_field", field), error


def test_a_file_past_its_expires_at_is_gone_at_once_as_a_deleted_one_is(client, db):
    file = _upload(client, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}).get_json()
    kept = _upload(client).get_json()
    with db.session() as session:  # an hour later
        session.execute(update(File).where(File.id == file["id"]).values(expires_at=utcnow() - timedelta(seconds=1)))
    for response in (client.get(f"/v1/files/{file['id']}"), client.get(f"/v1/files/{file['id']}/content"),
                     client.delete(f"/v1/files/{file['id']}")):
        assert (response.status_code, response.get_json()["error"]["code"]) == (404, "not_found")
    listed = [f["id"] for f in client.get("/v1/files?limit=10000").get_json()["data"]]
    assert file["id"] not in listed and kept["id"] in listed
    batch = client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"})
    assert batch.status_code == 400 and batch.get_json()["error"]["details"]["field"] == "input_file_id"
