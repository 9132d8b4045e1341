"""The nanoMolmo2 architecture: vision encoder, connector, Qwen3 language model, and their composition."""

from .config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig
from .connector import Connector
from .language_model import LanguageModel
from .nanomolmo2 import NanoMolmo2
from .vision_encoder import VisionEncoder

__all__ = [
    "Connector",
    "ConnectorConfig",
    "LanguageModel",
    "LanguageModelConfig",
    "NanoMolmo2",
    "NanoMolmo2Config",
    "VisionConfig",
    "VisionEncoder",
]
