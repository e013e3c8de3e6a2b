"""Jobs on documents (PDF, TIFF, HEIC) and on several images, through the HTTP API; no worker reads them here."""
import base64
import io

import pytest

from service.adapters.db import Database
from service.core.models import Job, JobPage
from tests.conftest import data_url, make_image
from tests.inputs import (
    corrupt_pdf,
    corrupt_tiff,
    empty_pdf,
    encrypted_pdf,
    huge_page_pdf,
    make_heic,
    make_pdf,
    make_tiff,
)

IDLE_MODEL = "tiny-idle"  # no worker serves it: jobs stay queued


def _form(*files, **fields):
    # A list of (file, name) under one field name sends the field once per file.
    return {"prompt": "Read it.", "model": IDLE_MODEL, "image": [(io.BytesIO(data), name) for data, name in files],
            **fields}


def _submit(client, *files, **fields):
    response = client.post("/v1/jobs", data=_form(*files, **fields))
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_a_pdf_is_a_document_job_with_its_pages(client):
    job = _submit(client, (make_pdf(["ONE", "TWO", "THREE"]), "invoice.bin"))  # the name says nothing
    assert job["image"]["format"] == "PDF" and job["page_mode"] == "document"
    assert [(page["page"], page["width"], page["height"]) for page in job["pages"]] == [(n, 1275, 1650)
                                                                                       for n in (1, 2, 3)]
    assert all(page["image"] is None and page["source_format"] == "PDF" for page in job["pages"])  # not rendered yet
    stored = client.get(f"/v1/jobs/{job['id']}/image")
    assert stored.status_code == 200 and stored.mimetype == "application/pdf" and stored.data.startswith(b"%PDF")
    assert client.get(f"/v1/jobs/{job['id']}/pages/1/image").get_json()["error"]["code"] == "not_found"


def test_a_page_range_and_per_page_mode(client):
    job = _submit(client, (make_pdf(["A", "B", "C", "D"]), "x.pdf"), pages="4,1-2", page_mode="per_page")
    assert job["page_mode"] == "per_page" and [page["page"] for page in job["pages"]] == [4, 1, 2]


def test_several_images_in_a_form_are_the_pages_of_one_job(client):
    first, second = make_image(color=(1, 2, 3)), make_image("JPEG", size=(50, 40))
    job = _submit(client, (first, "a.png"), (second, "b.jpg"))
    assert [(page["page"], page["source_format"], page["width"]) for page in job["pages"]] == [(1, "PNG", 96),
                                                                                            (2, "JPEG", 50)]
    page = client.get(f"/v1/jobs/{job['id']}/pages/2/image")  # an image's page is the image itself
    assert page.status_code == 200 and page.data == second and page.mimetype == "image/jpeg"


def test_several_images_as_a_json_list(client):
    body = {"prompt": "Compare.", "model": IDLE_MODEL,
            "image": [data_url(make_image()), base64.b64encode(make_image("WEBP")).decode()]}
    job = client.post("/v1/jobs", json=body).get_json()
    assert [page["source_format"] for page in job["pages"]] == ["PNG", "WEBP"]


def test_tiff_and_heic_are_documents(client):
    tiff = _submit(client, (make_tiff(["A", "B"]), "scan.tif"))
    assert tiff["image"]["format"] == "TIFF" and len(tiff["pages"]) == 2
    heic = _submit(client, (make_heic(), "photo.jpg"))
    assert heic["image"]["format"] == "HEIF" and len(heic["pages"]) == 1


def test_one_plain_image_stays_a_plain_job(client):
    job = _submit(client, (make_image(), "a.png"))
    assert job["page_mode"] is None and job["pages"] is None


def test_document_mode_is_bounded_by_max_pages_per_request(client, settings):
    pdf = make_pdf([str(n) for n in range(settings.max_pages_per_request + 1)])
    response = client.post("/v1/jobs", data=_form((pdf, "long.pdf")))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "too_many_pages"
    assert _submit(client, (pdf, "long.pdf"), page_mode="per_page")["page_mode"] == "per_page"


BAD_DOCUMENTS = {
    "encrypted pdf": (lambda: _form((encrypted_pdf(), "a.pdf")), "pdf_encrypted"),
    "pdf without pages": (lambda: _form((empty_pdf(), "a.pdf")), "document_empty"),
    "corrupt pdf": (lambda: _form((corrupt_pdf(), "a.pdf")), "invalid_document"),
    "corrupt tiff": (lambda: _form((corrupt_tiff(), "a.tif")), "invalid_document"),
    "200-inch page": (lambda: _form((huge_page_pdf(), "a.pdf")), "page_too_large"),
    "page past the end": (lambda: _form((make_pdf(["A", "B"]), "a.pdf"), pages="3"), "page_out_of_range"),
    "malformed range": (lambda: _form((make_pdf(["A", "B"]), "a.pdf"), pages="1-x"), "invalid_field"),
    "bad page_mode": (lambda: _form((make_pdf(["A"]), "a.pdf"), page_mode="spread"), "invalid_field"),
    "bad second image": (lambda: _form((make_image(), "a.png"), (b"junk", "b.png")), "invalid_image"),
}


@pytest.mark.parametrize("case", BAD_DOCUMENTS, ids=list(BAD_DOCUMENTS))
def test_bad_documents_get_their_code_and_store_nothing(client, settings, case):
    build, code = BAD_DOCUMENTS[case]
    blobs = settings.blob_dir
    before_blobs = _count_blobs(blobs)
    with Database(settings.database_url).session() as session:
        before = (session.query(Job).count(), session.query(JobPage).count())
    response = client.post("/v1/jobs", data=build())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    with Database(settings.database_url).session() as session:
        assert (session.query(Job).count(), session.query(JobPage).count()) == before
    assert _count_blobs(blobs) == before_blobs


def test_more_pages_than_max_pages(app, settings, api_key):
    from service.app import create_app
    from tests.conftest import keyed

    small = create_app(settings.__class__(**{**settings.__dict__, "max_pages": 2}))
    response = keyed(small.test_client(), api_key).post("/v1/jobs", data=_form((make_pdf(["A", "B", "C"]), "a.pdf")))
    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {"field": "image", "pages": 3, "limit": 2}
    response = keyed(small.test_client(), api_key).post(
        "/v1/jobs", data=_form((make_image(), "a.png"), (make_image(), "b.png"), (make_image(), "c.png")))
    assert response.get_json()["error"]["code"] == "too_many_pages"


def _count_blobs(root):
    from pathlib import Path

    return sum(1 for path in Path(root).rglob("*") if path.is_file() and not path.name.startswith("."))
