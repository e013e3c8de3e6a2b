"""Inference engines behind one interface (`workers.engines.base.Engine`)."""
from __future__ import annotations

from service.config import Settings
from workers.engines.base import Engine
from workers.registry import LocalModel


def create_engine(model: LocalModel, settings: Settings) -> Engine:
    """The engine for a registry model. Qwen3-VL on OpenVINO is the only one today."""
    from workers.engines.openvino_vlm import OpenVINOVLMEngine

    return OpenVINOVLMEngine(model, settings)
