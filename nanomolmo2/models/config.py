"""Plain dataclass configs for the three parts of nanoMolmo2, with the presets the project uses.

- `LanguageModelConfig`: a Qwen3 decoder (the defaults are Qwen3-0.6B).
- `VisionConfig`: Molmo2's SigLIP-style ViT (`molmo2()`) or Molmo v1's CLIP ViT-L/14-336 (`clip_vit_l14_336()`).
- `ConnectorConfig`: pooling + projector from vision features to LLM embeddings.
- `NanoMolmo2Config`: the three together plus the Molmo2 special-token ids.
Every preset has a `tiny()` sibling for tests and the CPU demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tokens import IM_END_ID, IMAGE_PATCH_ID, MOLMO2_EXTRA_ROWS, QWEN3_VOCAB_SIZE


@dataclass
class LanguageModelConfig:
    """A Qwen3 decoder. Defaults are Qwen3-0.6B."""

    vocab_size: int = QWEN3_VOCAB_SIZE  # rows the output head covers
    additional_vocab_size: int = MOLMO2_EXTRA_ROWS  # extra embedding rows for the Molmo2 special tokens
    hidden_size: int = 1024
    num_layers: int = 28
    num_heads: int = 16
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 3072
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 40960
    # A restricted output vocabulary (empty = all `vocab_size` tokens): the head scores only these token
    # ids. For tiny models trained on a narrow dataset, where a 151,936-way head would cost most of the
    # compute; every other token gets probability 0. (The Molmo2 format keeps the full head.)
    output_token_ids: tuple[int, ...] = ()
    # Dropout on each block's attention and MLP outputs before they join the residual stream, in training only
    # (Molmo2's olmo/nn/llm.py): `residual_dropout` at every position (Molmo2's SFT: 0.1), or
    # `response_residual_dropout` only where the next token carries loss (its stage 1: 0.1). The trainer sets both.
    residual_dropout: float = 0.0
    response_residual_dropout: float = 0.0

    @classmethod
    def tiny(cls, vocab_size: int = QWEN3_VOCAB_SIZE) -> LanguageModelConfig:
        return cls(
            vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
            intermediate_size=128, rope_theta=10_000.0, max_position_embeddings=4096,
        )  # fmt: skip


@dataclass
class VisionConfig:
    """A ViT on patchified crops. Defaults are Molmo2's SigLIP 2 so400m/14 at 378 px."""

    image_size: int = 378
    patch_size: int = 14
    hidden_size: int = 1152
    num_layers: int = 27  # depth of the full architecture; only the blocks the features need are built
    num_heads: int = 16
    intermediate_size: int = 4304
    layer_norm_eps: float = 1e-6
    activation: str = "gelu_tanh"  # "gelu_tanh" (SigLIP) or "quick_gelu" (CLIP)
    use_cls_token: bool = False  # CLIP prepends a class token and has a pre-LayerNorm
    patch_bias: bool = True  # SigLIP's patch embedding has a bias, CLIP's does not
    # Blocks whose outputs are concatenated on channels; negative counts from num_layers.
    feature_layers: tuple[int, ...] = (-3, -9)
    # How the processor cuts images for this encoder: up to max_crops overlapping crops besides the global
    # one (0 = the global crop only), neighbours overlapping by overlap_margins patches.
    max_crops: int = 8
    overlap_margins: tuple[int, int] = (4, 4)

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.patches_per_side**2

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * 3

    @property
    def resolved_feature_layers(self) -> list[int]:
        return [layer % self.num_layers for layer in self.feature_layers]

    @property
    def num_built_layers(self) -> int:
        return max(self.resolved_feature_layers) + 1

    @classmethod
    def molmo2(cls) -> VisionConfig:
        return cls()

    @classmethod
    def clip_vit_l14_336(cls) -> VisionConfig:
        # Molmo v1 read blocks -2 and -9 of the 24-block CLIP.
        return cls(
            image_size=336, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
            layer_norm_eps=1e-5, activation="quick_gelu", use_cls_token=True, patch_bias=False,
            feature_layers=(-2, -9),
        )  # fmt: skip

    @classmethod
    def tiny(cls) -> VisionConfig:
        return cls(
            image_size=56, hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64, feature_layers=(-1, -3)
        )


@dataclass
class ConnectorConfig:
    """Vision features -> LLM embeddings. "attention" is Molmo2's; "linear" and "mlp" pool by averaging."""

    kind: str = "attention"  # "attention" | "linear" | "mlp"
    pool_heads: int = 16
    pool_head_dim: int = 72
    pool_hidden_size: int = 1152  # output width of the pooling attention
    projector_hidden_size: int = 3072  # SwiGLU hidden width (Molmo2: the LLM's FFN width)
    image_pooling: tuple[int, int] = (2, 2)
    video_pooling: tuple[int, int] = (3, 3)

    @classmethod
    def tiny(cls) -> ConnectorConfig:
        return cls(pool_heads=4, pool_head_dim=8, pool_hidden_size=32, projector_hidden_size=128)


@dataclass
class NanoMolmo2Config:
    llm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    image_patch_id: int = IMAGE_PATCH_ID
    eos_token_id: int = IM_END_ID

    @classmethod
    def tiny(cls) -> NanoMolmo2Config:
        return cls(llm=LanguageModelConfig.tiny(), vision=VisionConfig.tiny(), connector=ConnectorConfig.tiny())
