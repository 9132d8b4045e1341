"""Hugging Face component checkpoints nanoMolmo2 is built from: Qwen3 LLMs and SigLIP / CLIP vision towers.

Names are translated by prefix tables (`{i}` = a layer number). These formats store q/k/v and up/gate
separately; our modules use one fused matmul each, so they are concatenated (keys.py). The tiny model's own
pretrained parts (nanomolmo2/pretrain/) are written in the same two formats, so transformers' `Qwen3ForCausalLM`
and `SiglipModel` load them unchanged and nanoMolmo2 loads them the way it loads Qwen3-0.6B and SigLIP 2.
"""

from __future__ import annotations

import re

from ..models.config import LanguageModelConfig, VisionConfig
from .keys import drop_keys, fuse, rename_keys, reverse, split_fused, unused_vision_blocks
from .molmo2 import molmo2_keys
from .weights import CheckpointError, KeyFilter

# ---------------------------------------------------------------- Qwen3

QWEN3_TABLE = [
    ("model.embed_tokens.", "embed_tokens."),
    ("model.layers.{i}.self_attn.o_proj.", "layers.{i}.attn.o_proj."),
    ("model.layers.{i}.self_attn.", "layers.{i}.attn."),
    ("model.layers.{i}.input_layernorm.", "layers.{i}.attn_norm."),
    ("model.layers.{i}.post_attention_layernorm.", "layers.{i}.mlp_norm."),
    ("model.layers.{i}.mlp.", "layers.{i}.mlp."),
    ("model.norm.", "norm."),
    ("lm_head.", "lm_head."),
]


def qwen3_config(cfg: dict) -> LanguageModelConfig:
    if cfg.get("attention_bias"):
        raise CheckpointError("Qwen3 checkpoints with attention_bias=True are not supported")
    rope = cfg.get("rope_parameters") or {}
    return LanguageModelConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        num_kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        max_position_embeddings=cfg.get("max_position_embeddings", 40960),
    )


def qwen3_state_to_ours(state: dict, config: LanguageModelConfig) -> dict:
    """Qwen3 names -> LanguageModel names. Qwen3 has no Molmo2 rows (`embed_tokens.new_weight`): the caller
    keeps its fresh initialisation for them."""
    state = rename_keys(state, QWEN3_TABLE)
    state = fuse(state, "layers.", ("q_proj", "k_proj", "v_proj"), "qkv_proj")
    state = fuse(state, "layers.", ("up_proj", "gate_proj"), "up_gate_proj")
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # a tied checkpoint may still carry a copy of the embeddings
    return state


def qwen3_config_dict(config: LanguageModelConfig) -> dict:
    """Our config as transformers' Qwen3Config (the inverse of `qwen3_config`)."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "dtype": "float32",
    }


def ours_to_qwen3_state(state: dict, config: LanguageModelConfig) -> dict:
    """LanguageModel names -> Qwen3 names. The Molmo2 rows are not part of Qwen3 and are left out."""
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    out = {}
    for key, value in state.items():
        if ".qkv_proj." in key:  # under grouped-query attention q is wider than k and v
            prefix, kind = key.rsplit(".qkv_proj.", 1)
            out.update(
                zip(
                    (f"{prefix}.{p}.{kind}" for p in ("q_proj", "k_proj", "v_proj")),
                    value.split([q, kv, kv]),
                    strict=True,
                )
            )
        elif key != "embed_tokens.new_weight":
            out[key] = value
    out = split_fused(out, "layers.", "up_gate_proj", ("up_proj", "gate_proj"))
    return rename_keys(out, reverse(QWEN3_TABLE))


# ---------------------------------------------------------------- SigLIP / CLIP vision towers

# Keys as transformers 5 writes them; older hub files carry a "vision_model." prefix, removed first.
HF_VISION_TABLE = [
    ("embeddings.patch_embedding.", "patch_embed."),
    ("embeddings.position_embedding.weight", "pos_embed"),
    ("embeddings.class_embedding", "cls_embed"),
    ("pre_layrnorm.", "pre_norm."),
    ("encoder.layers.{i}.layer_norm1.", "blocks.{i}.norm1."),
    ("encoder.layers.{i}.layer_norm2.", "blocks.{i}.norm2."),
    ("encoder.layers.{i}.self_attn.out_proj.", "blocks.{i}.o_proj."),
    ("encoder.layers.{i}.self_attn.", "blocks.{i}."),
    ("encoder.layers.{i}.mlp.", "blocks.{i}."),
]
# Parts of SigLIP/CLIP checkpoints (vision tower or the full two-tower model) that feature extraction never uses.
HF_VISION_UNUSED = [
    r"^post_layernorm\.",
    r"^head\.",
    r"^text_model\.",
    r"^(visual|text)_projection\.",
    r"^logit_(scale|bias)$",
    r"^embeddings\.position_ids$",
]


def hf_vision_config(cfg: dict, feature_layers: tuple[int, ...] | None = None) -> VisionConfig:
    """A SigLIP or CLIP config.json (vision tower or two-tower model) -> VisionConfig."""
    model_type = cfg.get("model_type", "")
    vision = cfg.get("vision_config", cfg)
    is_clip = model_type.startswith("clip")
    preset = VisionConfig.clip_vit_l14_336() if is_clip else VisionConfig.molmo2()
    return VisionConfig(
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        hidden_size=vision["hidden_size"],
        num_layers=vision["num_hidden_layers"],
        num_heads=vision["num_attention_heads"],
        intermediate_size=vision["intermediate_size"],
        layer_norm_eps=vision.get("layer_norm_eps", preset.layer_norm_eps),
        activation={"gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}[vision["hidden_act"]],
        use_cls_token=is_clip,
        patch_bias=not is_clip,
        feature_layers=tuple(feature_layers or preset.feature_layers),
    )


def vision_keys(cfg: dict, feature_layers: tuple[int, ...] | None = None) -> KeyFilter:
    """Which tensors of a Molmo2, SigLIP or CLIP checkpoint (config.json `cfg`) the vision encoder needs: the ViT's,
    up to the deepest feature layer (no LLM, no text tower, no head)."""
    if cfg.get("model_type") == "molmo2":
        return molmo2_keys(cfg, ("vit",), feature_layers)
    built = hf_vision_config(cfg, feature_layers).num_built_layers
    unused = [re.compile(p) for p in HF_VISION_UNUSED + [unused_vision_blocks("encoder.layers.", built)]]
    return lambda key: not any(p.match(key.removeprefix("vision_model.")) for p in unused)


def hf_vision_state_to_ours(state: dict, config: VisionConfig) -> dict:
    """SigLIP / CLIP names -> VisionEncoder names, blocks past the deepest feature layer dropped."""
    state = {key.removeprefix("vision_model."): value for key, value in state.items()}
    state = drop_keys(state, HF_VISION_UNUSED + [unused_vision_blocks("encoder.layers.", config.num_built_layers)])
    state = rename_keys(state, HF_VISION_TABLE)
    conv = state.get("patch_embed.weight")
    if conv is not None and conv.dim() == 4:  # [D, 3, p, p] conv kernel -> Linear over (row, col, channel)
        state["patch_embed.weight"] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)
    return fuse(state, "blocks.", ("q_proj", "k_proj", "v_proj"), "qkv_proj")


# Our ViT's names -> SigLIP's, for writing (reading folds SigLIP's attention and MLP prefixes into one).
OURS_TO_HF_VISION = [
    ("patch_embed.", "embeddings.patch_embedding."),
    ("pos_embed", "embeddings.position_embedding.weight"),
    ("blocks.{i}.norm1.", "encoder.layers.{i}.layer_norm1."),
    ("blocks.{i}.norm2.", "encoder.layers.{i}.layer_norm2."),
    ("blocks.{i}.o_proj.", "encoder.layers.{i}.self_attn.out_proj."),
    ("blocks.{i}.q_proj.", "encoder.layers.{i}.self_attn.q_proj."),
    ("blocks.{i}.k_proj.", "encoder.layers.{i}.self_attn.k_proj."),
    ("blocks.{i}.v_proj.", "encoder.layers.{i}.self_attn.v_proj."),
    ("blocks.{i}.fc1.", "encoder.layers.{i}.mlp.fc1."),
    ("blocks.{i}.fc2.", "encoder.layers.{i}.mlp.fc2."),
]


def ours_to_hf_vision_state(state: dict, config: VisionConfig) -> dict:
    """VisionEncoder names -> a SigLIP vision tower's (the inverse of `hf_vision_state_to_ours`, SigLIP only). The
    blocks alone (no patch embedding) convert too: SigLIP's text tower has the same blocks."""
    if config.use_cls_token:
        raise CheckpointError("only SigLIP-style encoders (no class token) are written in the SigLIP format")
    state = split_fused(state, "blocks.", "qkv_proj", ("q_proj", "k_proj", "v_proj"))
    if "patch_embed.weight" in state:  # Linear over (row, column, channel) -> conv kernel [D, 3, p, p]
        weight, p = state["patch_embed.weight"], config.patch_size
        state["patch_embed.weight"] = weight.reshape(weight.shape[0], p, p, 3).permute(0, 3, 1, 2).contiguous()
    return rename_keys(state, OURS_TO_HF_VISION)


def siglip_vision_config_dict(config: VisionConfig) -> dict:
    """A SigLIP vision tower's config (transformers' SiglipVisionConfig) for our encoder."""
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_built_layers,
        "num_attention_heads": config.num_heads,
        "num_channels": 3,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "hidden_act": {"gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu"}[config.activation],
        "layer_norm_eps": config.layer_norm_eps,
        "vision_use_head": True,
    }
