"""Reading the component checkpoints nanoMolmo2 is built from: Qwen3 LLMs and SigLIP / CLIP vision towers.

Names are translated by prefix tables (`{i}` = a layer number). These formats store q/k/v and up/gate
separately; our modules use one fused matmul each, so they are concatenated on load. The Molmo2 format
(read and written) lives in molmo2_format.py and reuses the helpers here.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import torch

from .config import LanguageModelConfig, VisionConfig
from .weights import CheckpointError, load_state_strict, read_config, read_weights, subtree

# ---------------------------------------------------------------- renaming helpers


@cache
def _prefix_regex(prefix: str) -> re.Pattern:
    return re.compile("^" + re.escape(prefix).replace(r"\{i\}", r"(\d+)") + "(.*)$")


def rename_keys(state: dict[str, torch.Tensor], table: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename every key by the first matching (source prefix, target prefix) pair; others stay as they are."""
    out = {}
    for key, value in state.items():
        for src, dst in table:
            match = _prefix_regex(src).match(key)
            if match:
                *layer, rest = match.groups()
                key = dst.replace("{i}", layer[0]) + rest if layer else dst + rest
                break
        out[key] = value
    return out


def reverse(table: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(dst, src) for src, dst in table]


def fuse(state: dict, scope: str, parts: tuple[str, ...], fused: str) -> dict:
    """Concatenate `<p>.<part>.<kind>` (dim 0, in `parts` order) into `<p>.<fused>.<kind>` for keys under `scope`."""
    out = dict(state)
    marker = f".{parts[0]}."
    for key in [k for k in state if k.startswith(scope) and marker in k]:
        prefix, kind = key.rsplit(marker, 1)
        names = [f"{prefix}.{p}.{kind}" for p in parts]
        if all(n in out for n in names):
            out[f"{prefix}.{fused}.{kind}"] = torch.cat([out.pop(n) for n in names])
    return out


def drop_keys(state: dict, patterns: list[str]) -> dict:
    """Remove keys matching any regex: weights a format carries that our model does not use."""
    return {k: v for k, v in state.items() if not any(re.match(p, k) for p in patterns)}


def unused_vision_blocks(prefix: str, built: int) -> str:
    """Regex for ViT blocks numbered >= `built`: full checkpoints have them, but no feature layer needs them."""
    return rf"^{re.escape(prefix)}(?!(?:{'|'.join(map(str, range(built)))})\.)\d+\."


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


def qwen3_state_to_ours(state: dict, model) -> dict:
    """Qwen3 names -> LanguageModel names."""
    state = rename_keys(state, QWEN3_TABLE)
    state = fuse(state, "layers.", ("q_proj", "k_proj", "v_proj"), "qkv_proj")
    state = fuse(state, "layers.", ("up_proj", "gate_proj"), "up_gate_proj")
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # a tied checkpoint may still carry a copy of the embeddings
    if "embed_tokens.weight" in state:
        # Qwen3 has no Molmo2 rows: they keep the model's fresh initialisation.
        state["embed_tokens.new_weight"] = model.embed_tokens.new_weight.detach().clone()
    return state


def load_qwen3(folder: Path, dtype: torch.dtype = torch.float32):
    from .language_model import LanguageModel

    model = LanguageModel(qwen3_config(read_config(folder)))
    load_state_strict(model, qwen3_state_to_ours(read_weights(folder), model), f"Qwen3 checkpoint {folder}")
    return model.to(dtype)


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


def hf_vision_config(cfg: dict, feature_layers: tuple[int, ...] | None) -> VisionConfig:
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


def hf_vision_state_to_ours(state: dict, config: VisionConfig) -> dict:
    state = {key.removeprefix("vision_model."): value for key, value in state.items()}
    state = drop_keys(state, HF_VISION_UNUSED + [unused_vision_blocks("encoder.layers.", config.num_built_layers)])
    state = rename_keys(state, HF_VISION_TABLE)
    conv = state.get("patch_embed.weight")
    if conv is not None and conv.dim() == 4:  # [D, 3, p, p] conv kernel -> Linear over (row, col, channel)
        state["patch_embed.weight"] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)
    return fuse(state, "blocks.", ("q_proj", "k_proj", "v_proj"), "qkv_proj")


def load_vision_encoder(folder: Path, feature_layers=None, dtype: torch.dtype = torch.float32):
    from .molmo2_format import molmo2_config, molmo2_state_to_ours
    from .vision_encoder import VisionEncoder

    cfg = read_config(folder)
    if cfg.get("model_type") == "molmo2":
        full = molmo2_config(cfg)
        config = full.vision
        if feature_layers is not None:
            config.feature_layers = tuple(feature_layers)
        state = subtree(molmo2_state_to_ours(read_weights(folder), full), "vision.")
        state = drop_keys(state, [unused_vision_blocks("blocks.", config.num_built_layers)])
    else:
        config = hf_vision_config(cfg, feature_layers)
        state = hf_vision_state_to_ours(read_weights(folder), config)
    encoder = VisionEncoder(config)
    load_state_strict(encoder, state, f"vision checkpoint {folder}")
    return encoder.to(dtype)
