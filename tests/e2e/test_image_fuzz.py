"""Bad and odd images through the jobs API and a native batch, to a live worker: a clear 4xx at submit, or a job
that ends (succeeded, or failed with a clear error) within a bound. Never a 500, a dead worker or a stuck job."""
import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from tests.conftest import make_image, wait_for_status
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
from workers.engines.images import prepare_image


def _png_with_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims `width` x `height` (a decompression bomb's header)."""
    data = bytearray(make_image("PNG", size=(1, 1)))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def _save(image: Image.Image, fmt: str, **args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **args)
    return buffer.getvalue()


def _frames(fmt: str) -> bytes:
    frames = [Image.new("RGB", (48, 32), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated() -> bytes:
    """A 60x20 picture, left half red and right half blue, stored with orientation 6 (shown turned 90° clockwise)."""
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (30, 0, 60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(image, "JPEG", exif=exif, quality=95)


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (10, 10, 30, 20))
    return _save(image, "PNG", transparency=0)


# name -> (bytes, the 4xx code at submit, or None when the job must run)
IMAGES = {
    "zero bytes": (b"", "invalid_image"),
    "truncated jpeg": (make_image("JPEG", size=(160, 120))[:300], "invalid_image"),
    "truncated png": (make_image("PNG", size=(160, 120))[:80], "invalid_image"),
    "huge dimensions": (_png_with_size(100_000, 100_000), "image_too_many_pixels"),
    "wrong magic": (b"GIF89a" + make_image("PNG")[6:], "invalid_image"),
    "text, not an image": (b"<html>hello</html>", "invalid_image"),
    "animated gif": (_frames("GIF"), "unsupported_image_format"),
    "bmp": (_save(Image.new("RGB", (8, 8)), "BMP"), "unsupported_image_format"),
    "animated webp": (_frames("WEBP"), None),
    "animated png": (_frames("PNG"), None),
    "cmyk jpeg": (_save(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"), None),
    "16-bit png": (_save(Image.new("I;16", (64, 48), 40000), "PNG"), None),
    "exif-rotated jpeg": (_exif_rotated(), None),
    "palette with transparency": (_palette_with_transparency(), None),
    "rgba png": (_save(Image.new("RGBA", (40, 30), (0, 0, 0, 0)), "PNG"), None),
    "grayscale": (_save(Image.new("L", (40, 30), 90), "PNG"), None),
    "1-bit": (_save(Image.new("1", (40, 30), 1), "PNG"), None),
    "1x1": (make_image("PNG", size=(1, 1)), None),
    "very wide": (make_image("PNG", size=(4000, 2)), None),
    "phone photo (mpo)": (_save(Image.new("RGB", (64, 48), (9, 9, 9)), "MPO", save_all=True,
                                append_images=[Image.new("RGB", (64, 48))]), None),
    # Documents: each read page by page, whatever the name says (the cases are sent as .jpg and .png).
    "pdf": (make_pdf(["A", "B"]), None),
    "multi-page tiff": (make_tiff(["A", "B"]), None),
    "heic photo": (make_heic(), None),
    "encrypted pdf": (encrypted_pdf(), "pdf_encrypted"),
    "pdf without pages": (empty_pdf(), "document_empty"),
    "truncated pdf": (corrupt_pdf(), "invalid_document"),
    "corrupt tiff": (corrupt_tiff(), "invalid_document"),
    "200-inch pdf page (render bomb)": (huge_page_pdf(), "page_too_large"),
}


@pytest.mark.parametrize("name", IMAGES, ids=list(IMAGES))
def test_each_image_gets_a_clear_4xx_or_a_job_that_ends(client, worker, name):
    data, refused_with = IMAGES[name]
    # no_cache: the second submission of the same image must reach the worker too, not the dedup cache.
    for body in ({"data": {"image": (io.BytesIO(data), "x.jpg"), "prompt": "What is it?", "max_tokens": "4",
                           "no_cache": "true"}},
                 {"json": {"image": base64.b64encode(data).decode(), "prompt": "What is it?", "max_tokens": 4,
                           "no_cache": True}}):
        response = client.post("/v1/jobs", **body)
        if refused_with is not None:
            expected = "missing_field" if "json" in body and not data else refused_with  # "" is no image at all
            assert response.status_code in (400, 413), response.get_json()
            assert response.get_json()["error"]["code"] == expected
            continue
        assert response.status_code == 202, response.get_json()
        job = wait_for_status(client, response.get_json()["id"], {"succeeded", "failed", "cancelled"}, timeout=90)
        assert job["status"] == "succeeded", job["error"]
    assert worker.process.poll() is None  # the worker survived it


def test_a_native_batch_of_every_image_ends_with_each_item_judged_alone(client, worker):
    files = [(io.BytesIO(data), f"{index:02d}.png") for index, (data, _) in enumerate(IMAGES.values())]
    response = client.post("/v1/batches", data={"prompt": "What is it?", "max_tokens": "4", "priority": "interactive",
                                                "images": files})
    assert response.status_code == 200, response.get_json()
    batch = wait_for_status(client, response.get_json()["id"], {"completed", "failed", "cancelled", "expired"},
                            timeout=180, resource="batches")
    assert batch["status"] == "completed"
    lines = client.get(f"/v1/batches/{batch['id']}/results").text.splitlines()
    items = {line["custom_id"]: line for line in map(json.loads, lines)}
    for index, (name, (_, refused_with)) in enumerate(IMAGES.items()):
        item = items[f"{index:02d}.png"]
        if refused_with is None:
            assert item["status"] == "succeeded", (name, item["error_code"], item["error_message"])
        else:
            assert (item["status"], item["error_code"]) == ("failed", refused_with), name
    assert worker.process.poll() is None


def test_exif_rotation_is_applied_before_the_model_sees_the_image():
    image = prepare_image(_exif_rotated(), max_pixels=10_000)
    assert image.size == (20, 60)  # turned upright: now tall
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 55))
    assert top[0] > 200 and top[2] < 60  # orientation 6: the left (red) half ends up on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_a_long_thin_strip_is_padded_to_a_shape_the_model_takes():
    image = prepare_image(make_image("PNG", size=(4000, 2), color=(0, 0, 0)), max_pixels=1_000_000)
    assert image.size == (4000, 80) and image.getpixel((2000, 40)) == (0, 0, 0) and image.getpixel((5, 0)) == (255,) * 3


def test_odd_colour_modes_reach_the_model_as_a_person_sees_them():
    assert prepare_image(_save(Image.new("I;16", (8, 8), 32896), "PNG"), 100).getpixel((0, 0)) == (128, 128, 128)
    assert prepare_image(_save(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), 100).getpixel((0, 0)) == (255,) * 3
    assert prepare_image(_palette_with_transparency(), 10_000).getpixel((0, 0)) == (255, 255, 255)
    cmyk = prepare_image(_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), 100).getpixel((4, 4))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60
