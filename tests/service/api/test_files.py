"""Files: upload names are stored only if they can be, and every name downloads with an RFC 6266 header."""
import io
from urllib.parse import quote, unquote

import pytest


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
