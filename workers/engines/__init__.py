"""Inference engines behind one interface (`workers.engines.base.Engine`)."""
from __future__ import annotations

from service.core.config import Settings
from workers.engines.base import Engine
from workers.modelstore.registry import LocalModel


def create_engine(model: LocalModel, settings: Settings) -> Engine:
    """The engine the registry entry names: Qwen3-VL on OpenVINO GenAI, or RapidOCR."""
    if model.spec.engine == "rapidocr":
        from workers.engines.rapidocr_engine import RapidOCREngine

        return RapidOCREngine(model, settings)
    from workers.engines.openvino_vlm import OpenVINOVLMEngine

    return OpenVINOVLMEngine(model, settings)
