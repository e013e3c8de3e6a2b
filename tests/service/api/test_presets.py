"""GET /v1/presets: what each configured preset fills in."""
import dataclasses

from service.app import create_app
from service.core.presets import BUILTIN_PRESETS, build_presets
from tests.conftest import keyed


def test_presets_lists_the_built_ins_with_their_prompt_model_and_schema(client, settings):
    body = client.get("/v1/presets").get_json()
    assert body["object"] == "list"
    presets = {preset["name"]: preset for preset in body["data"]}
    assert set(BUILTIN_PRESETS) <= set(presets)
    assert [preset["name"] for preset in body["data"]] == sorted(presets)
    assert presets["ocr"]["model"] == "rapidocr" and presets["ocr"]["schema"] is None
    assert presets["describe"] == {"object": "preset", "name": "describe", "model": None, "max_tokens": 64,
                                   "prompt": settings.presets["describe"].prompt, "schema": None, "labels": [],
                                   "ground_with_ocr": False, "max_pixels": 100_352}
    receipt = presets["receipt"]
    assert "total" in receipt["schema"]["properties"]
    assert receipt["max_tokens"] == settings.presets["receipt"].max_tokens
    assert presets["moderate"]["labels"][0] == "safe" and presets["moderate"]["schema"]["required"][0] == "label"


def test_presets_from_the_configuration_are_listed(settings, api_key):
    extra = {"shelf-label": {"prompt": "Read the shelf label.", "max_tokens": 40}}
    presets = build_presets(extra, settings.registry, settings.max_tokens_limit)
    client = keyed(create_app(dataclasses.replace(settings, presets=presets)).test_client(), api_key)
    presets = {preset["name"]: preset for preset in client.get("/v1/presets").get_json()["data"]}
    assert presets["shelf-label"]["prompt"] == "Read the shelf label." and presets["shelf-label"]["max_tokens"] == 40
