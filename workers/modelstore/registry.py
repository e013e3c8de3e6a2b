"""Which registry models this machine can serve: the ones whose exported files are present locally."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from service.core.availability import fix
from service.core.config import ModelSpec, Settings

# The exporter writes this file last among the model's parts; export.py renames the folder into
# place only after a successful export, so its presence means the export is whole.
_EXPORT_MARKER = "openvino_language_model.xml"
BUILTIN_PREFIX = "builtin:"  # built offline by workers.modelstore.tiny: the real architecture, random weights
TINY_SOURCE = "builtin:tiny-random"


def builtin_preset(spec: ModelSpec) -> str | None:
    """The random_model preset a `builtin:` source names, else None."""
    return spec.source.removeprefix(BUILTIN_PREFIX) if spec.source.startswith(BUILTIN_PREFIX) else None


@dataclass(frozen=True)
class LocalModel:
    spec: ModelSpec
    path: Path

    @property
    def exported(self) -> bool:
        """Whether this machine can serve the model: an export on disk, or for OCR, the rapidocr package."""
        if self.spec.engine == "rapidocr":
            return self.path.is_dir()
        return (self.path / _EXPORT_MARKER).is_file()

    def missing_reason(self) -> str:
        """What is wrong, and the command that fixes it."""
        if self.spec.engine == "rapidocr":
            return f"model {self.spec.name!r} needs the rapidocr package: {fix(self.spec, self.spec.name)}"
        return f"model {self.spec.name!r} is not exported at {self.path}: {fix(self.spec, self.spec.name)}"


def local_model(settings: Settings, spec: ModelSpec) -> LocalModel:
    if spec.engine == "rapidocr":  # its models ship inside the package; nothing is exported
        found = importlib.util.find_spec("rapidocr")
        path = Path(found.origin).parent / "models" if found and found.origin else Path("rapidocr-not-installed")
        return LocalModel(spec=spec, path=path)
    return LocalModel(spec=spec, path=Path(settings.model_cache) / spec.export_dir_name)


def candidate_models(settings: Settings) -> list[LocalModel]:
    """Registry models this worker is asked to serve (all of them unless VLQ_MODELS narrows it)."""
    names = settings.models or tuple(settings.registry)
    return [local_model(settings, settings.registry[name]) for name in names]
