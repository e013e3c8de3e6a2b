"""Presets from config.yaml, and how a preset fills a request's fields."""
import pytest

from service.core.config import ConfigError, load_settings
from service.core.errors import ApiError
from service.core.presets import apply_preset


def _settings(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(environ={"VLQ_CONFIG": str(path)})


def test_config_adds_presets_and_changes_builtin_ones(tmp_path):
    settings = _settings(tmp_path, """
default_model: tiny-random
presets:
  shelf-label:
    prompt: Read the price on the shelf label.
    model: tiny-random
    max_tokens: 40
    schema: {type: object, properties: {price: {type: number}}, additionalProperties: false}
  moderate:
    labels: [ok, not-ok]
""")
    shelf = settings.presets["shelf-label"]
    assert (shelf.model, shelf.max_tokens, shelf.output_schema()["properties"]) == (
        "tiny-random", 40, {"price": {"type": "number"}})
    assert settings.presets["moderate"].output_schema()["properties"]["label"]["enum"] == ["ok", "not-ok"]
    assert settings.presets["receipt"].output_schema() is not None  # built-ins stay


@pytest.mark.parametrize(("preset", "message"), [
    ("{prompt: Hi, model: nope}", "not in the model registry"),
    ("{prompt: Hi, schema: {type: nope}}", "not a valid JSON Schema"),
    ("{model: tiny-random}", "'prompt' is required"),
    ("{prompt: Hi, temperature: 3}", "unknown key"),
    ("{prompt: Hi, max_tokens: 999999}", "max_tokens"),
    ("{prompt: Hi, model: rapidocr, schema: {type: object}}", "OCR model"),
    ("{prompt: Hi, max_pixels: 100}", "max_pixels must be an integer of at least 1024"),
    ("{prompt: Hi, max_pixels: 5e4}", "max_pixels must be an integer"),
])
def test_invalid_presets_fail_at_load(tmp_path, preset, message):
    with pytest.raises(ConfigError, match=message):
        _settings(tmp_path, f"presets:\n  mine: {preset}\n")


def test_a_preset_fills_defaults_and_explicit_fields_win():
    presets = load_settings(environ={}).presets
    fields, preset = apply_preset(presets, {"preset": "describe", "max_tokens": 10, "prompt": ""})
    assert preset.name == "describe"
    assert fields["prompt"] == presets["describe"].prompt  # an empty field does not override
    assert fields["max_tokens"] == 10
    assert apply_preset(presets, {"preset": "ocr"})[0]["model"] == "rapidocr"
    assert apply_preset(presets, {"prompt": "x"}) == ({"prompt": "x"}, None)


def test_an_unknown_preset_is_a_400_listing_the_available_ones():
    with pytest.raises(ApiError) as caught:
        apply_preset(load_settings(environ={}).presets, {"preset": "poem"})
    assert caught.value.code == "unknown_preset" and "receipt" in caught.value.details["available"]


def test_presets_with_a_schema_extract_and_label_presets_do_not():
    presets = load_settings({}, environ={}).presets
    assert presets["invoice"].extracts and presets["receipt"].extracts
    assert not presets["moderate"].extracts and not presets["describe"].extracts and not presets["ocr"].extracts
