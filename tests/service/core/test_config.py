from pathlib import Path

import pytest

from service.core.config import ConfigError, Settings, load_settings


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
        ({"review_confidence": 1.5}, "review_confidence"),
        ({"review_confidence": -0.1}, "review_confidence"),
        ({"queue_timeout_s": {"urgent": 5}}, "queue_timeout_s: unknown priority"),
        ({"queue_timeout_s": {"bulk": -1}}, "queue_timeout_s must not be negative"),
        ({"queue_timeout_s": "[1, 2]"}, "queue_timeout_s must map"),
    ],
)
def test_invalid_settings_say_which_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides, environ={})


def test_engine_tuning_mappings_come_from_the_file_or_the_environment(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("scheduler:\n  enable_prefix_caching: true\n")
    settings = load_settings(environ={"VLQ_CONFIG": str(config),
                                      "VLQ_OPENVINO_PROPERTIES": '{"KV_CACHE_PRECISION": "u8"}'})
    assert settings.scheduler == {"enable_prefix_caching": True}
    assert settings.openvino_properties == {"KV_CACHE_PRECISION": "u8"}
    with pytest.raises(ConfigError, match="scheduler"):
        load_settings(environ={"VLQ_SCHEDULER": "[1, 2]"})


def test_queue_timeouts_are_per_priority_or_one_number_and_keep_the_defaults_not_given(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("queue_timeout_s: {bulk: 7200}\n")
    settings = load_settings(environ={"VLQ_CONFIG": str(config)})
    assert (settings.queue_timeout("interactive"), settings.queue_timeout("bulk")) == (300, 7200)
    settings = load_settings(environ={"VLQ_CONFIG": str(config), "VLQ_QUEUE_TIMEOUT_S": "0"})
    assert (settings.queue_timeout("interactive"), settings.queue_timeout("bulk")) == (0, 0)


def test_the_quick_start_config_defaults_to_a_model_make_run_serves():
    # `make run` builds tiny-random and serves rapidocr: a request without `model` must find a worker.
    root = Path(__file__).resolve().parents[3]
    settings = load_settings(environ={"VLQ_CONFIG": str(root / "config.yaml")})
    assert settings.default_model == "tiny-random"
    assert Settings().default_model == "qwen3-vl-2b"  # the code default; servers (the image) keep the real one
    assert "VLQ_DEFAULT_MODEL=qwen3-vl-2b" in (root / "Dockerfile").read_text()


def test_missing_config_file_named_by_env_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"VLQ_CONFIG": str(tmp_path / "missing.yaml")})


def test_auth_is_on_unless_a_flag_turns_it_off(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("port: 9000\n")
    assert load_settings(environ={"VLQ_CONFIG": str(path)}).disable_auth is False  # the code default
    assert load_settings(environ={"VLQ_CONFIG": str(path), "VLQ_DISABLE_AUTH": "true"}).disable_auth is True
    with pytest.raises(ConfigError, match="disable_auth"):  # a typo is an error, never a guess
        load_settings(environ={"VLQ_CONFIG": str(path), "VLQ_DISABLE_AUTH": "ture"})


def test_the_local_config_file_turns_auth_off_and_the_server_examples_turn_it_on():
    root = Path(__file__).resolve().parents[3]
    assert load_settings(environ={"VLQ_CONFIG": str(root / "config.yaml")}).disable_auth is True
    assert 'VLQ_DISABLE_AUTH: "false"' in (root / "docker-compose.yml").read_text()
    assert "VLQ_DISABLE_AUTH=false" in (root / "Dockerfile").read_text()


def test_loopback_webhooks_are_for_the_local_config_only(tmp_path):
    root = Path(__file__).resolve().parents[3]
    local = load_settings(environ={"VLQ_CONFIG": str(root / "config.yaml")})
    assert local.webhook_allow_loopback is True and "::1/128" in local.webhook_allow_cidrs
    path = tmp_path / "config.yaml"
    path.write_text("port: 9000\n")
    assert load_settings(environ={"VLQ_CONFIG": str(path)}).webhook_allow_cidrs == ()  # the code default: off
    assert 'VLQ_WEBHOOK_ALLOW_LOOPBACK: "false"' in (root / "docker-compose.yml").read_text()
    assert "VLQ_WEBHOOK_ALLOW_LOOPBACK=false" in (root / "Dockerfile").read_text()
