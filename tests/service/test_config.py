import pytest

from service.config import ConfigError, load_settings


def test_precedence_is_defaults_then_file_then_environment_then_overrides(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("batch_size: 3\nport: 9000\nredis_url: redis://file/0\n")
    env = {"VLQ_CONFIG": str(path), "VLQ_BATCH_SIZE": "5", "VLQ_MODELS": "tiny-random"}
    settings = load_settings({"port": 9100}, environ=env)
    assert settings.batch_size == 5  # env beats the file
    assert settings.port == 9100  # overrides beat everything
    assert settings.redis_url == "redis://file/0"  # file beats defaults
    assert settings.models == ("tiny-random",)
    assert settings.job_timeout_s == 600  # code default


def test_file_registry_adds_to_the_built_in_models(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  mine:\n    source: /models/mine\n    weight_format: int4\n")
    registry = load_settings(environ={"VLQ_CONFIG": str(path)}).registry
    assert registry["mine"].weight_format == "int4"
    assert {"mine", "tiny-random", "qwen3-vl-2b"} <= set(registry)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"default_model": "nope"}, "default_model"),
        ({"models": ("nope",)}, "VLQ_MODELS"),
        ({"batch_sise": 4}, "unknown setting"),
        ({"port": "eighty"}, "port"),
        ({"sync_timeout_s": 0}, "sync_timeout_s"),
        ({"sync_max_queue_depth": -1}, "sync_max_queue_depth"),
    ],
)
def test_invalid_settings_say_which_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides, environ={})


def test_missing_config_file_named_by_env_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"VLQ_CONFIG": str(tmp_path / "missing.yaml")})
