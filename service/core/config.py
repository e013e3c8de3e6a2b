"""Settings: code defaults, then config.yaml, then VLQ_* environment variables, then explicit overrides.

Everything reads one `Settings` object; nothing else looks at the environment.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.core.logs import FORMATS as LOG_FORMATS
from service.core.presets import Preset, PresetError, build_presets

ENV_PREFIX = "VLQ_"
WEIGHT_FORMATS = ("int8", "int4", "fp16", "fp32")
ENGINES = ("openvino-vlm", "rapidocr")


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


_LOOPBACK = ("127.0.0.0/8", "::1/128")

@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: where a model comes from and how it is exported and run."""

    name: str
    source: str  # a hub id, a local checkpoint directory, or "builtin:<preset>" (random weights, built offline)
    weight_format: str = "int8"
    max_pixels: int = 448 * 448  # images are scaled down to at most this many pixels
    device: str = "CPU"
    engine: str = "openvino-vlm"  # openvino-vlm | rapidocr

    @property
    def export_dir_name(self) -> str:
        return f"{self.name}-{self.weight_format}"


DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "qwen3-vl-2b": {"source": "Qwen/Qwen3-VL-2B-Instruct", "weight_format": "int8"},
    "tiny-random": {"source": "builtin:tiny-random", "weight_format": "fp16"},
    "qwen3-vl-2b-random": {"source": "builtin:qwen3-vl-2b-random", "weight_format": "int8"},
    # PP-OCR models that ship inside the rapidocr wheel; OCR wants resolution, hence the larger pixel budget.
    "rapidocr": {"source": "builtin:rapidocr", "weight_format": "fp32", "engine": "rapidocr",
                 "max_pixels": 4_000_000},
}


# How long a queued job waits while no live worker serves its model, per priority, before it fails as
# model_unavailable (service.core.availability); 0 waits for ever. Bulk work tolerates a slower cold start.
DEFAULT_QUEUE_TIMEOUT_S: dict[str, float] = {"interactive": 300.0, "bulk": 3600.0}


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///data/vlq.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    blob_dir: str = "data/blobs"
    # Empty: blobs (and pushed models) live in blob_dir on this host. "s3://bucket/prefix": on S3-compatible storage,
    # reached with the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    blob_url: str = ""
    s3_addressing_style: str = "path"  # path | virtual | auto; path suits S3-compatible servers (and AWS)
    blob_presign_s: float = 0.0  # >0 and on S3: file downloads redirect to a presigned URL valid this long
    model_cache: str = "data/models"
    host: str = "127.0.0.1"
    port: int = 8080
    # auto: text on a terminal, JSON lines otherwise; json: one object a line, with job_id; text: human-readable
    log_format: str = "auto"

    # Engine: sequences run together, which is also how many jobs a worker takes at once.
    batch_size: int = 8
    kv_cache_gb: int = 1  # KV-cache memory the engine reserves
    inference_threads: int = 0  # 0 lets OpenVINO use every core
    # Engine tuning, passed through: OpenVINO properties (e.g. KV_CACHE_PRECISION) and SchedulerConfig fields
    # (e.g. max_num_batched_tokens, enable_prefix_caching). docs/BENCHMARKS.md shows what each one did here.
    openvino_properties: Mapping[str, Any] = field(default_factory=dict)
    scheduler: Mapping[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # restricts what a worker serves; empty serves every exported model
    default_model: str = "qwen3-vl-2b"
    registry: Mapping[str, ModelSpec] = field(default_factory=dict)
    presets: Mapping[str, Preset] = field(default_factory=dict)  # built-ins overlaid with config.yaml `presets:`

    # Input limits.
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_prompt_chars: int = 16_000
    # Documents (PDF, TIFF, HEIC) and several images in one job: every page counts against max_image_pixels.
    pdf_dpi: int = 150  # PDF pages render at this resolution (a page too large for max_image_pixels is refused)
    max_pages: int = 500  # pages a job's inputs may have in all
    max_pages_per_request: int = 8  # pages the model sees at once in `document` mode (sharing its pixel budget)
    max_tokens_limit: int = 4096
    default_max_tokens: int = 512
    max_metadata_bytes: int = 16 * 1024
    max_json_depth: int = 64  # objects and arrays nested in a JSON body (or a form field's JSON text); deeper is a 400
    max_upload_bytes: int = 2 * 1024**3  # a batch input file, or a native batch's images
    # A native batch's zips: images in all of them, and their bytes once inflated (checked from each zip's
    # directory before reading, then while reading). `vlq submit` sends a folder as one zip.
    max_archive_entries: int = 100_000
    max_archive_bytes: int = 4 * 1024**3

    # Grounded fields (service.core.grounding): a worker serving a VLM also loads the OCR engine, to find each
    # extracted value on its page; a job needs review when a required value is ungrounded or below this confidence.
    ground_fields: bool = True
    review_confidence: float = 0.7

    # Reliability.
    job_timeout_s: int = 600
    max_attempts: int = 3
    heartbeat_interval_s: float = 2.0
    heartbeat_ttl_s: float = 10.0
    sweep_interval_s: float = 5.0  # how often beat runs the broker, orphan recovery, batch and webhook passes
    dispatch_grace_s: float = 10.0  # a queued job not handed to the broker this long after it was stored is sent
    shutdown_grace_s: float = 60.0  # a warm stop lets running jobs finish this long, then requeues the rest
    cancel_wait_s: float = 2.0  # how long POST /cancel waits for a running job to stop
    # Per priority (a number sets both): the longest a queued job waits while no live worker serves its model.
    queue_timeout_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_QUEUE_TIMEOUT_S))

    # Synchronous endpoints (chat completions, /api/v1/chat, generateContent): bounded waits, bounded queues.
    sync_timeout_s: float = 120.0  # a request still unanswered after this is cancelled and answered 504
    sync_max_queue_depth: int = 32  # refuse (503) while this many interactive jobs already wait for the model
    image_url_fetch: bool = False  # fetch http(s) image_url parts (through the SSRF guard); data URLs always work
    image_url_timeout_s: float = 10.0  # the bound on fetching one image URL, connect to last byte
    image_url_max_concurrent: int = 4  # image URL fetches one process makes at once; more get 503 image_url_busy

    # Retention: how long data is kept after its job ends (files: after they were created); 0 keeps it forever.
    retention_images_s: float = 7 * 86400
    retention_results_s: float = 30 * 86400
    retention_files_s: float = 30 * 86400
    retention_interval_s: float = 3600.0  # how often beat runs the retention pass

    # Webhooks. The schedule is the delay before each attempt (Standard Webhooks' default).
    webhook_retry_schedule_s: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_s: float = 10.0  # the whole of one attempt: connect, send, answer
    webhook_concurrency: int = 4  # deliveries one worker sends at once, beside its inference slots
    webhook_queue: str = "vlq.webhooks"  # the Celery queue deliveries go through; every worker consumes it
    webhook_secret: str = ""  # used for a job's webhook_url when the job brings no webhook_secret
    egress_allow_cidrs: tuple[str, ...] = ()  # private ranges outbound requests may reach anyway
    # LOCAL USE ONLY: webhooks may reach this machine (127.0.0.0/8, ::1), so a receiver can be tried with `make run`.
    # The shipped config.yaml turns it on; the Docker image and docker-compose turn it off.
    webhook_allow_loopback: bool = False
    max_webhook_endpoints_per_tenant: int = 20  # registered endpoints (not deleted) a tenant may have; 0: unlimited

    # Access. Every request needs an API key unless auth is disabled, which only local use should do.
    disable_auth: bool = False
    rate_limit_rps: float = 20.0  # per key, for keys without their own; 0 is unlimited
    max_queued_jobs: int = 100_000  # queued + running jobs per tenant, for keys without their own; 0 is unlimited
    # Failed authentications (no, unknown or revoked key) per client address: a steady rate after a burst; 0 is
    # unlimited. Over it, the address gets 429 before any key is looked up.
    auth_failure_rate_per_s: float = 5.0
    auth_failure_burst: int = 20

    # Flower, Celery's monitor: where `vlq run` and `vlq flower` bind it, and the URL the web UI links to.
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    flower_url: str = ""  # empty: http://{flower_host}:{flower_port}; set it when Flower sits behind a proxy
    flower_basic_auth: str = ""  # "user:password" (comma-separated for several); required unless auth is disabled

    @property
    def worker_concurrency(self) -> int:
        """Jobs a worker holds at once: one batch generating, one being claimed and decoded behind it."""
        return self.batch_size * 2

    @property
    def visibility_timeout_s(self) -> int:
        """Redis redelivers unacknowledged tasks after this; it must outlast the longest job."""
        return self.job_timeout_s * 2 + 60

    @property
    def webhook_allow_cidrs(self) -> tuple[str, ...]:
        """The private networks webhooks may reach: egress_allow_cidrs, and loopback where allowed for development."""
        return self.egress_allow_cidrs + (_LOOPBACK if self.webhook_allow_loopback else ())

    @property
    def webhook_lease_s(self) -> float:
        """How long a worker holds a delivery: an attempt ends within webhook_timeout_s (the socket is shut down
        then), so twice that plus a margin for recording it. The lease is renewed when the attempt starts."""
        return 2 * self.webhook_timeout_s + 5

    @property
    def webhook_tenant_slots(self) -> int:
        """A worker's webhook threads one tenant may hold at once: half the pool, so others always get through."""
        return max(1, self.webhook_concurrency // 2)

    @property
    def flower_link(self) -> str:
        """The URL the web UI links to for Flower."""
        return self.flower_url or f"http://{self.flower_host}:{self.flower_port}"

    def model(self, name: str) -> ModelSpec | None:
        return self.registry.get(name)

    def queue_timeout(self, priority: str) -> float:
        """Seconds a queued job of this priority waits while no live worker serves its model; 0 is for ever."""
        return float(self.queue_timeout_s.get(priority, DEFAULT_QUEUE_TIMEOUT_S.get(priority, 0.0)))


def load_settings(overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from defaults, config.yaml (or $VLQ_CONFIG), VLQ_* variables and `overrides`."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {"registry": dict(DEFAULT_MODELS)}
    values.update(_read_yaml(environ))
    values.update(_read_environ(environ))
    values.update(overrides or {})
    return _build(values)


def _read_yaml(environ: Mapping[str, str]) -> dict[str, Any]:
    path = Path(environ.get(f"{ENV_PREFIX}CONFIG", "config.yaml"))
    if not path.exists():
        if f"{ENV_PREFIX}CONFIG" in environ:
            raise ConfigError(f"{ENV_PREFIX}CONFIG points to {path}, which does not exist")
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    if "models" in data and isinstance(data["models"], dict):
        # In the file, `models:` is the registry; the env var VLQ_MODELS is the served subset.
        data["registry"] = {**DEFAULT_MODELS, **data.pop("models")}
    return data


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(Settings)} - {"registry", "presets"}
    return {
        name: environ[f"{ENV_PREFIX}{name.upper()}"]
        for name in names
        if f"{ENV_PREFIX}{name.upper()}" in environ
    }


def _build(values: dict[str, Any]) -> Settings:
    hints = typing.get_type_hints(Settings)
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(values) - fields
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    kwargs = {name: _coerce(name, hints[name], value) for name, value in values.items()
              if name not in ("registry", "presets", "queue_timeout_s")}
    if "queue_timeout_s" in values:
        kwargs["queue_timeout_s"] = _queue_timeouts(values["queue_timeout_s"])
    kwargs["registry"] = _build_registry(values.get("registry", {}))
    try:
        kwargs["presets"] = build_presets(values.get("presets"), kwargs["registry"],
                                          kwargs.get("max_tokens_limit", Settings.max_tokens_limit))
    except PresetError as exc:
        raise ConfigError(str(exc)) from None
    settings = Settings(**kwargs)
    _validate(settings)
    return settings


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            return _boolean(value)
        if hint in (int, float):
            return hint(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else value
            element = typing.get_args(hint)[0]
            return tuple(element(str(item).strip()) for item in items if str(item).strip())
        if hint is str:
            return str(value)
        if origin is Mapping:  # from the environment: a YAML/JSON mapping, e.g. '{"KV_CACHE_PRECISION": "u8"}'
            value = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(value, Mapping):
                raise TypeError("a mapping is needed")
            return dict(value)
    except (TypeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"setting {name!r}: cannot read {value!r} as {getattr(hint, '__name__', hint)}") from exc
    return value


def _queue_timeouts(value: Any) -> dict[str, float]:
    """`queue_timeout_s`: a mapping of priorities to seconds (the others keep their defaults), or one number for all;
    from the environment as YAML, e.g. '{bulk: 7200}' or '60'."""
    value = yaml.safe_load(value) if isinstance(value, str) else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = dict.fromkeys(DEFAULT_QUEUE_TIMEOUT_S, value)
    if not isinstance(value, Mapping):
        raise ConfigError("queue_timeout_s must map priorities (interactive, bulk) to seconds, or be one number")
    unknown = set(value) - set(DEFAULT_QUEUE_TIMEOUT_S)
    if unknown:
        raise ConfigError(f"queue_timeout_s: unknown priority(ies) {', '.join(sorted(map(str, unknown)))}")
    try:
        timeouts = {**DEFAULT_QUEUE_TIMEOUT_S, **{key: float(seconds) for key, seconds in value.items()}}
    except (TypeError, ValueError):
        raise ConfigError(f"queue_timeout_s: cannot read {value!r} as seconds") from None
    if any(not 0 <= seconds < float("inf") for seconds in timeouts.values()):
        raise ConfigError("queue_timeout_s must not be negative (0 waits for ever)")
    return timeouts


def _boolean(value: Any) -> bool:
    # Strict, so a typo in a flag such as disable_auth is an error rather than a silent guess.
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _build_registry(raw: Mapping[str, Any]) -> dict[str, ModelSpec]:
    registry = {}
    known = {f.name for f in dataclasses.fields(ModelSpec)} - {"name"}
    for name, entry in raw.items():
        entry = {"source": entry} if isinstance(entry, str) else dict(entry or {})
        unknown = set(entry) - known
        if unknown:
            raise ConfigError(f"model {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
        if "source" not in entry:
            raise ConfigError(f"model {name!r}: 'source' is required (a hub id or a local directory)")
        spec = ModelSpec(name=name, **entry)
        if spec.weight_format not in WEIGHT_FORMATS:
            raise ConfigError(f"model {name!r}: weight_format must be one of {', '.join(WEIGHT_FORMATS)}")
        if spec.engine not in ENGINES:
            raise ConfigError(f"model {name!r}: engine must be one of {', '.join(ENGINES)}")
        registry[name] = spec
    return registry


def _validate(settings: Settings) -> None:
    if settings.blob_url and not (settings.blob_url.startswith("s3://") and settings.blob_url[5:].split("/")[0]):
        raise ConfigError("blob_url must be empty (the local blob_dir) or s3://bucket[/prefix]")
    if settings.s3_addressing_style not in ("path", "virtual", "auto"):
        raise ConfigError("s3_addressing_style must be one of path, virtual, auto")
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    if settings.batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if settings.default_model not in settings.registry:
        raise ConfigError(f"default_model {settings.default_model!r} is not in the model registry")
    missing = [name for name in settings.models if name not in settings.registry]
    if missing:
        raise ConfigError(f"VLQ_MODELS names model(s) not in the registry: {', '.join(missing)}")
    if not settings.webhook_retry_schedule_s or min(settings.webhook_retry_schedule_s) < 0:
        raise ConfigError("webhook_retry_schedule_s must list at least one delay, none negative")
    if settings.webhook_secret and not settings.webhook_secret.startswith("whsec_"):
        raise ConfigError("webhook_secret must be a Standard Webhooks secret, whsec_<base64>")
    if settings.rate_limit_rps < 0 or settings.max_queued_jobs < 0:
        raise ConfigError("rate_limit_rps and max_queued_jobs must not be negative (0 means unlimited)")
    if settings.auth_failure_rate_per_s < 0 or settings.auth_failure_burst < 1:
        raise ConfigError("auth_failure_rate_per_s must not be negative (0 means unlimited) and auth_failure_burst "
                          "must be at least 1")
    if settings.sync_timeout_s <= 0 or settings.image_url_timeout_s <= 0:
        raise ConfigError("sync_timeout_s and image_url_timeout_s must be positive")
    if settings.image_url_max_concurrent < 1 or settings.webhook_concurrency < 1:
        raise ConfigError("image_url_max_concurrent and webhook_concurrency must be at least 1")
    if settings.max_webhook_endpoints_per_tenant < 0:
        raise ConfigError("max_webhook_endpoints_per_tenant must not be negative (0 means unlimited)")
    if settings.flower_basic_auth and any(":" not in pair for pair in settings.flower_basic_auth.split(",")):
        raise ConfigError('flower_basic_auth must be "user:password" (comma-separated for several users)')
    if not 2 <= settings.max_json_depth <= 200:  # deeper than ~200 and jsonschema's recursion could fail first
        raise ConfigError("max_json_depth must be between 2 and 200")
    if not 0 <= settings.review_confidence <= 1:
        raise ConfigError("review_confidence must be between 0 and 1")
    if settings.sync_max_queue_depth < 0:
        raise ConfigError("sync_max_queue_depth must not be negative")
    if settings.heartbeat_ttl_s <= settings.heartbeat_interval_s:
        raise ConfigError("heartbeat_ttl_s must be longer than heartbeat_interval_s")
    for name in ("retention_images_s", "retention_results_s", "retention_files_s", "dispatch_grace_s",
                 "shutdown_grace_s", "blob_presign_s"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    for name in ("sweep_interval_s", "retention_interval_s"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive")
