"""The nanoMolmo2 model: vision encoder, connector, Qwen3 language model, and their composition."""

from .attention import KVCache
from .config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig
from .connector import Connector
from .language_model import LanguageModel, ModelOutput
from .nanomolmo2 import NanoMolmo2
from .vision_encoder import VisionEncoder
from .weights import CheckpointError

__all__ = [
    "CheckpointError",
    "Connector",
    "ConnectorConfig",
    "KVCache",
    "LanguageModel",
    "LanguageModelConfig",
    "ModelOutput",
    "NanoMolmo2",
    "NanoMolmo2Config",
    "VisionConfig",
    "VisionEncoder",
]
