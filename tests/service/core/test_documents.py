"""Documents typed from their bytes, checked from headers and page sizes, and rendered one page at a time."""
import pytest

from service.core import documents
from service.core.errors import ApiError
from tests.conftest import make_image
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

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000, "dpi": 150, "max_pages": 500}


@pytest.mark.parametrize(("make", "kind"), [
    (lambda: make_pdf(["A"]), "PDF"), (lambda: make_tiff(["A"]), "TIFF"), (make_heic, "HEIF"),
    (lambda: make_image("PNG"), None), (lambda: make_image("JPEG"), None), (lambda: b"just text", None),
])
def test_the_type_comes_from_the_bytes(make, kind):
    assert documents.sniff(make()) == kind


def test_a_pdf_is_sized_per_page_at_the_dpi_without_rendering():
    source = documents.inspect_source(make_pdf(["ONE", "TWO", "THREE"]), **LIMITS)
    # Letter (8.5 x 11 in) at 150 dpi.
    assert source.format == "PDF" and source.sizes == ((1275, 1650),) * 3


def test_a_tiff_has_a_page_per_frame_and_heic_one():
    assert documents.inspect_source(make_tiff(["A", "B"], size=(300, 200)), **LIMITS).sizes == ((300, 200),) * 2
    heic = documents.inspect_source(make_heic(size=(320, 240)), **LIMITS)
    assert heic.format == "HEIF" and heic.sizes == ((320, 240),)


@pytest.mark.parametrize(("make", "code"), [
    (encrypted_pdf, "pdf_encrypted"), (empty_pdf, "document_empty"), (corrupt_pdf, "invalid_document"),
    (corrupt_tiff, "invalid_document"), (lambda: make_heic()[:1500], "invalid_document"),
])
def test_bad_documents_are_refused_with_their_own_code(make, code):
    with pytest.raises(ApiError) as caught:
        documents.inspect_source(make(), **LIMITS)
    assert caught.value.code == code and caught.value.status == 400


def test_an_empty_pdf_reads_as_empty_whatever_failed_before_it():
    # PDFium keeps its last error across documents; an empty PDF sets none of its own.
    for before in (encrypted_pdf, corrupt_pdf):
        with pytest.raises(ApiError):
            documents.inspect_source(before(), **LIMITS)
        with pytest.raises(ApiError) as caught:
            documents.inspect_source(empty_pdf(), **LIMITS)
        assert caught.value.code == "document_empty"


def test_more_pages_than_max_pages_is_refused():
    with pytest.raises(ApiError) as caught:
        documents.inspect_source(make_pdf(["A", "B", "C"]), **{**LIMITS, "max_pages": 2})
    assert caught.value.code == "too_many_pages" and caught.value.details["pages"] == 3


def test_a_render_bomb_page_is_refused_from_its_size_alone():
    source = documents.inspect_source(huge_page_pdf(), **LIMITS)  # sizes only: nothing rendered
    assert source.sizes == ((30000, 30000),)
    with pytest.raises(ApiError) as caught:
        documents.select_pages([source], None, max_pixels=LIMITS["max_pixels"], max_pages=500)
    assert caught.value.code == "page_too_large" and caught.value.details["page"] == 1


def test_pages_are_numbered_across_inputs_and_picked_by_range():
    sources = [documents.inspect_source(make_pdf(["A", "B", "C"]), **LIMITS),
               documents.inspect_source(make_image(size=(40, 30)), **LIMITS)]
    pages = documents.select_pages(sources, "4,1-2", max_pixels=LIMITS["max_pixels"], max_pages=500)
    assert [(page.number, page.source, page.index) for page in pages] == [(4, 1, 0), (1, 0, 0), (2, 0, 1)]
    assert (pages[0].width, pages[0].height) == (40, 30)


@pytest.mark.parametrize(("spec", "code"), [
    ("5", "page_out_of_range"), ("2-9", "page_out_of_range"), ("0", "invalid_field"), ("3-1", "invalid_field"),
    ("a", "invalid_field"), ("1,,2", "invalid_field"),
])
def test_bad_page_ranges(spec, code):
    with pytest.raises(ApiError) as caught:
        documents.parse_pages(spec, 4)
    assert caught.value.code == code


def test_rendering_reads_one_page_at_the_dpi():
    pdf = make_pdf(["ONE", "TWO"])
    first, second = (documents.render_page(pdf, "PDF", index, 72) for index in (0, 1))
    assert first.size == (612, 792) and first.mode == "RGB"
    assert first.tobytes() != second.tobytes()  # different text on each page
    frames = [documents.render_page(make_tiff(["A", "B"]), "TIFF", index, 150) for index in (0, 1)]
    assert frames[0].tobytes() != frames[1].tobytes()
