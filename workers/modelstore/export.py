"""Export a Hugging Face Qwen3-VL checkpoint to OpenVINO IR with optimum-intel.

The exporter runs as a subprocess of this interpreter (its import of torch/transformers
is heavy and it leaks memory); it writes into a hidden sibling directory that is renamed
into place only after it succeeded and the result looks complete, so a crashed or killed
export can never be mistaken for a usable model.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

WEIGHT_FORMATS: frozenset[str] = frozenset({"int8", "int4", "fp16", "fp32"})

# What OpenVINO GenAI's VLM / continuous-batching pipelines load for qwen3_vl.  The
# exporter only *warns* when tokenizer conversion fails, so we check for these ourselves.
REQUIRED_FILES: tuple[str, ...] = (
    "config.json",
    "preprocessor_config.json",
    "openvino_language_model.xml",
    "openvino_language_model.bin",
    "openvino_text_embeddings_model.xml",
    "openvino_vision_embeddings_model.xml",
    "openvino_vision_embeddings_merger_model.xml",
    "openvino_vision_embeddings_pos_model.xml",
    "openvino_tokenizer.xml",
    "openvino_detokenizer.xml",
)

# Processor side files the exporter does not re-save: it can only save processors it can
# instantiate, and Qwen3VLProcessor needs torchvision (for its video processor), which we
# do not install.  The tokenizer and image processor load fine on their own, so only
# these plain files are missing; we copy them verbatim from the source.
_SIDE_FILES: tuple[str, ...] = ("chat_template.json", "video_preprocessor_config.json")

_TAIL_CHARS = 4000


class ExportError(RuntimeError):
    """The OpenVINO export failed; ``output_tail`` holds the end of the exporter's output."""

    def __init__(self, message: str, output_tail: str = "") -> None:
        super().__init__(f"{message}\n--- exporter output (tail) ---\n{output_tail}" if output_tail else message)
        self.output_tail = output_tail


def export_model(
    source: str | Path,
    out_dir: Path,
    weight_format: str = "int8",
    *,
    overwrite: bool = True,
    timeout_s: float | None = None,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Export ``source`` (hub id or local checkpoint dir) to OpenVINO IR in ``out_dir`` atomically."""
    # An existing out_dir is replaced only after the new export succeeded (overwrite=False
    # refuses instead); callers decide themselves whether re-exporting is wanted.
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {sorted(WEIGHT_FORMATS)}, got {weight_format!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and overwrite=False")

    local_source = _local_source(source)
    model_arg = str(local_source) if local_source is not None else str(source)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays on one filesystem and is atomic; the leading dot
    # and suffix keep model discovery from ever picking it up.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        started = time.monotonic()
        _run_exporter(model_arg, staging, weight_format, extra_args, offline=local_source is not None,
                      timeout_s=timeout_s)
        _copy_side_files(local_source, str(source), staging)
        missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
        if missing:
            raise ExportError(f"export of {model_arg} finished but is incomplete, missing: {', '.join(missing)}")
        _move_into_place(staging, out_dir, overwrite=overwrite)
        logger.info(
            "exported %s (%s) to %s in %.1fs", model_arg, weight_format, out_dir, time.monotonic() - started
        )
        return out_dir
    finally:
        # On success the staging dir has been renamed away; on any failure it is removed.
        shutil.rmtree(staging, ignore_errors=True)


def exporter_command(model_arg: str, output: Path, weight_format: str, extra_args: tuple[str, ...] = ()) -> list[str]:
    """Return the optimum-cli command line used for the export (extra_args: e.g. ("--group-size", "64"))."""
    # `python -m` of this interpreter, rather than an `optimum-cli` found on PATH, guarantees
    # the exporter runs in the same virtualenv as the service.
    return [
        sys.executable,
        "-m",
        "optimum.commands.optimum_cli",
        "export",
        "openvino",
        "--model",
        model_arg,
        "--task",
        "image-text-to-text",
        "--weight-format",
        weight_format,
        *extra_args,
        str(output),
    ]


def _local_source(source: str | Path) -> Path | None:
    """Return the checkpoint directory if ``source`` is local, None if it is a hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.absolute()
    # "org/name" is a hub id, but something that is clearly a path must exist.
    if isinstance(source, Path) or str(source).startswith(("/", ".", "~")) or path.exists():
        raise ExportError(f"model source {source} is not a checkpoint directory")
    return None


def _run_exporter(model_arg: str, output: Path, weight_format: str, extra_args: tuple[str, ...], offline: bool,
                  timeout_s: float | None) -> None:
    """Run optimum-cli in a subprocess, raising ExportError with its output tail on failure."""
    env = dict(os.environ)
    if offline:
        # A local checkpoint needs nothing from the hub; make any accidental lookup fail fast
        # instead of hanging on (or leaking to) the network.
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = exporter_command(model_arg, output, weight_format, extra_args)
    logger.info("running %s", " ".join(command))
    try:
        proc = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"export of {model_arg} timed out after {timeout_s}s", _tail(exc.output)) from exc
    output_text = _tail(proc.stdout)
    logger.debug("exporter output tail:\n%s", output_text)
    if proc.returncode != 0:
        raise ExportError(f"export of {model_arg} failed with exit code {proc.returncode}", output_text)


def _copy_side_files(local_source: Path | None, source: str, staging: Path) -> None:
    """Copy processor files the exporter could not re-save (see _SIDE_FILES) into staging."""
    for name in _SIDE_FILES:
        if (staging / name).exists():
            continue
        found = _find_side_file(local_source, source, name)
        if found is not None:
            shutil.copyfile(found, staging / name)


def _find_side_file(local_source: Path | None, source: str, name: str) -> Path | None:
    """Locate ``name`` in the local checkpoint, or in the hub cache without any network access."""
    if local_source is not None:
        candidate = local_source / name
        return candidate if candidate.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    cached = try_to_load_from_cache(source, name)
    return Path(cached) if isinstance(cached, str) else None


def _move_into_place(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished export to ``out_dir``; an existing one is replaced only if asked."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} appeared during the export; not replacing it")
    # Directories cannot be swapped in one syscall: move the old one aside first, so out_dir
    # is only ever a complete model (old or new), though it is briefly absent in between.
    retired = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
    out_dir.rename(retired)
    staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _tail(data: bytes | str | None) -> str:
    """Return the last few KB of subprocess output as text."""
    if not data:
        return ""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return text[-_TAIL_CHARS:]
