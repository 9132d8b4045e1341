"""The Molmo2 checkpoint format: what released `allenai/Molmo2-*` folders hold and what transformers'
`Molmo2ForConditionalGeneration.save_pretrained` writes (docs/MOLMO2.md, "Checkpoints"). We read both and
write it, so transformers loads what we train unchanged.

OLMo-style names with fused projections (`att_proj` = [q; k; v], `ff_proj` = [up; gate]), which are the
layouts our modules use, so only names change; the embedding table is stored as `wte.embedding` +
`wte.new_embedding` (released: 151,936 + 128 rows; transformers 5.24 writes two equal halves).
"""

from __future__ import annotations

import re

import torch

from ..models.config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig
from ..tokens import (
    FRAME_END_ID,
    FRAME_START_ID,
    IMAGE_END_ID,
    IMAGE_PATCH_ID,
    IMAGE_START_ID,
    LOW_RES_IMAGE_START_ID,
    MOLMO2_EXTRA_ROWS,
)
from .keys import drop_keys, fuse, rename_keys, reverse, split_fused, unused_vision_blocks
from .weights import CheckpointError, KeyFilter, subtree

MOLMO2_TABLE = [
    ("model.transformer.blocks.{i}.attn_norm.", "llm.layers.{i}.attn_norm."),
    ("model.transformer.blocks.{i}.ff_norm.", "llm.layers.{i}.mlp_norm."),
    ("model.transformer.blocks.{i}.self_attn.att_proj.", "llm.layers.{i}.attn.qkv_proj."),
    ("model.transformer.blocks.{i}.self_attn.attn_out.", "llm.layers.{i}.attn.o_proj."),
    ("model.transformer.blocks.{i}.self_attn.", "llm.layers.{i}.attn."),
    ("model.transformer.blocks.{i}.mlp.ff_proj.", "llm.layers.{i}.mlp.up_gate_proj."),
    ("model.transformer.blocks.{i}.mlp.ff_out.", "llm.layers.{i}.mlp.down_proj."),
    ("model.transformer.ln_f.", "llm.norm."),
    ("lm_head.", "llm.lm_head."),
    ("model.vision_backbone.image_vit.patch_embedding.", "vision.patch_embed."),
    ("model.vision_backbone.image_vit.positional_embedding", "vision.pos_embed"),
    ("model.vision_backbone.image_vit.class_embedding", "vision.cls_embed"),
    ("model.vision_backbone.image_vit.pre_ln.", "vision.pre_norm."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.attention.wq.", "vision.blocks.{i}.q_proj."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.attention.wk.", "vision.blocks.{i}.k_proj."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.attention.wv.", "vision.blocks.{i}.v_proj."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.attention.wo.", "vision.blocks.{i}.o_proj."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.attention_norm.", "vision.blocks.{i}.norm1."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.ffn_norm.", "vision.blocks.{i}.norm2."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.feed_forward.w1.", "vision.blocks.{i}.fc1."),
    ("model.vision_backbone.image_vit.transformer.resblocks.{i}.feed_forward.w2.", "vision.blocks.{i}.fc2."),
    ("model.vision_backbone.image_pooling_2d.wq.", "connector.pool.q_proj."),
    ("model.vision_backbone.image_pooling_2d.wk.", "connector.pool.k_proj."),
    ("model.vision_backbone.image_pooling_2d.wv.", "connector.pool.v_proj."),
    ("model.vision_backbone.image_pooling_2d.wo.", "connector.pool.o_proj."),
]
# Molmo2's SwiGLU projector; the "linear"/"mlp" teaching connectors keep their own names under image_projector.
MOLMO2_PROJECTOR_TABLE = [
    ("model.vision_backbone.image_projector.w1.", "connector.projector.gate_proj."),
    ("model.vision_backbone.image_projector.w3.", "connector.projector.up_proj."),
    ("model.vision_backbone.image_projector.w2.", "connector.projector.down_proj."),
]
PLAIN_PROJECTOR_TABLE = [("model.vision_backbone.image_projector.", "connector.projector.")]
WTE, WTE_NEW = "model.transformer.wte.embedding", "model.transformer.wte.new_embedding"
# The parts of a Molmo2 checkpoint, by key prefix: composing with another LLM reads only "vit" and "pooling".
MOLMO2_PARTS = {
    "llm": ("model.transformer.", "lm_head."),
    "vit": ("model.vision_backbone.image_vit.",),
    "pooling": ("model.vision_backbone.image_pooling_2d.",),
    "projector": ("model.vision_backbone.image_projector.",),
}


def _projector_table(config: NanoMolmo2Config) -> list[tuple[str, str]]:
    return MOLMO2_PROJECTOR_TABLE if config.connector.kind == "attention" else PLAIN_PROJECTOR_TABLE


def molmo2_keys(cfg: dict, parts: tuple[str, ...] = tuple(MOLMO2_PARTS), feature_layers=None) -> KeyFilter:
    """Which tensors of a Molmo2 checkpoint (config.json `cfg`) to read: those of `parts`, never the ViT blocks past
    the deepest feature layer. With every part, keys of no known part are read too, so strict loading reports them."""
    vision = molmo2_config(cfg).vision
    if feature_layers is not None:
        vision.feature_layers = tuple(feature_layers)
    unused = re.compile(
        unused_vision_blocks("model.vision_backbone.image_vit.transformer.resblocks.", vision.num_built_layers)
    )
    prefixes = tuple(prefix for part in parts for prefix in MOLMO2_PARTS[part])
    everything = set(parts) == set(MOLMO2_PARTS)
    return lambda key: unused.match(key) is None and (everything or key.startswith(prefixes))


def molmo2_config(cfg: dict) -> NanoMolmo2Config:
    """Read a Molmo2 config.json: transformers' layout or the released one (vit_config, vit_layers, ...)."""
    text = cfg["text_config"]
    vit = cfg.get("vision_config") or cfg["vit_config"]
    adapter = cfg["adapter_config"]
    extra = cfg.get("nanomolmo2", {})
    if text.get("norm_after") or text.get("qk_norm_type", "qwen3") != "qwen3":
        raise CheckpointError(
            "only Qwen3-style Molmo2 text models are supported (norm_after=False, qk_norm_type='qwen3')"
        )
    rope = text.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or text.get("rope_scaling"):
        raise CheckpointError(f"RoPE scaling is not supported: {rope or text.get('rope_scaling')}")
    image_size = vit.get("image_size") or vit.get("image_default_input_size") or [378, 378]
    llm = LanguageModelConfig(
        vocab_size=text["vocab_size"],
        additional_vocab_size=text.get("additional_vocab_size", MOLMO2_EXTRA_ROWS),
        hidden_size=text["hidden_size"],
        num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"],
        num_kv_heads=text["num_key_value_heads"],
        head_dim=text["head_dim"],
        intermediate_size=text["intermediate_size"],
        rope_theta=rope.get("rope_theta", text.get("rope_theta", 1e6)),
        rms_norm_eps=text.get("rms_norm_eps", text.get("layer_norm_eps", 1e-6)),
        tie_word_embeddings=False,  # Molmo2 files always carry their own lm_head
        max_position_embeddings=text.get("max_position_embeddings", 36864),
        output_token_ids=tuple(extra.get("output_token_ids", ())),
    )
    vision_extra = extra.get("vision", {})
    vision = VisionConfig(
        image_size=image_size[0],
        patch_size=vit.get("patch_size") or vit.get("image_patch_size", 14),
        hidden_size=vit["hidden_size"],
        num_layers=vit["num_hidden_layers"],
        num_heads=vit["num_attention_heads"],
        intermediate_size=vit["intermediate_size"],
        layer_norm_eps=vit.get("layer_norm_eps", 1e-6),
        activation=vision_extra.get("activation", "gelu_tanh"),
        use_cls_token=vision_extra.get("use_cls_token", False),
        patch_bias=vision_extra.get("patch_bias", True),
        feature_layers=tuple(adapter.get("vision_feature_layer") or adapter.get("vit_layers") or (-3, -9)),
        max_crops=vision_extra.get("max_crops", 8),
        overlap_margins=tuple(vision_extra.get("overlap_margins", (4, 4))),
    )
    connector = ConnectorConfig(
        kind=extra.get("connector", "attention"),
        pool_heads=adapter["num_attention_heads"],
        pool_head_dim=adapter["head_dim"],
        pool_hidden_size=adapter["hidden_size"],
        projector_hidden_size=adapter["intermediate_size"],
        image_pooling=tuple(extra.get("image_pooling", (2, 2))),
        video_pooling=tuple(extra.get("video_pooling", (3, 3))),
    )
    return NanoMolmo2Config(
        llm=llm, vision=vision, connector=connector, image_patch_id=cfg.get("image_patch_id", IMAGE_PATCH_ID)
    )


def molmo2_config_dict(config: NanoMolmo2Config) -> dict:
    """Our config as transformers' Molmo2Config (v5 layout), plus a `nanomolmo2` section for our options."""
    llm, vision, conn = config.llm, config.vision, config.connector
    return {
        "architectures": ["Molmo2ForConditionalGeneration"],
        "model_type": "molmo2",
        "image_start_token_id": IMAGE_START_ID,
        "image_end_token_id": IMAGE_END_ID,
        "image_patch_id": config.image_patch_id,
        "low_res_image_start_token_id": LOW_RES_IMAGE_START_ID,
        "frame_start_token_id": FRAME_START_ID,
        "frame_end_token_id": FRAME_END_ID,
        "tie_word_embeddings": False,
        "dtype": "float32",
        "text_config": {
            "model_type": "molmo2_text",
            "vocab_size": llm.vocab_size,
            "additional_vocab_size": llm.additional_vocab_size,
            "hidden_size": llm.hidden_size,
            "num_hidden_layers": llm.num_layers,
            "num_attention_heads": llm.num_heads,
            "num_key_value_heads": llm.num_kv_heads,
            "head_dim": llm.head_dim,
            "intermediate_size": llm.intermediate_size,
            "hidden_act": "silu",
            "rms_norm_eps": llm.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": llm.rope_theta},
            "max_position_embeddings": llm.max_position_embeddings,
            "qk_norm_type": "qwen3",
            "norm_after": False,
            "attention_bias": False,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "molmo2_vision",
            "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_built_layers,
            "num_attention_heads": vision.num_heads,
            "num_key_value_heads": vision.num_heads,
            "head_dim": vision.hidden_size // vision.num_heads,
            "hidden_act": {"gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu"}[vision.activation],
            "layer_norm_eps": vision.layer_norm_eps,
            "image_size": [vision.image_size, vision.image_size],
            "patch_size": vision.patch_size,
            "num_position_embeddings": vision.num_patches + int(vision.use_cls_token),
        },
        "adapter_config": {
            "model_type": "molmo2_adapter",
            "vision_feature_layer": vision.resolved_feature_layers,
            "hidden_size": conn.pool_hidden_size,
            "num_attention_heads": conn.pool_heads,
            "num_key_value_heads": conn.pool_heads,
            "head_dim": conn.pool_head_dim,
            "intermediate_size": conn.projector_hidden_size,
            "text_hidden_size": llm.hidden_size,
            "hidden_act": "silu",
            "attention_bias": True,
            "mlp_bias": False,
        },
        "nanomolmo2": {
            "connector": conn.kind,
            "output_token_ids": list(llm.output_token_ids),
            "image_pooling": list(conn.image_pooling),
            "video_pooling": list(conn.video_pooling),
            "vision": {
                "activation": vision.activation,
                "use_cls_token": vision.use_cls_token,
                "patch_bias": vision.patch_bias,
                "max_crops": vision.max_crops,
                "overlap_margins": list(vision.overlap_margins),
            },
        },
    }


def molmo2_state_to_ours(state: dict, config: NanoMolmo2Config) -> dict:
    """Molmo2 names -> NanoMolmo2 names (ViT blocks past the deepest feature layer dropped)."""
    state = dict(state)
    if WTE in state or WTE_NEW in state:
        parts = [state.pop(k) for k in (WTE, WTE_NEW) if k in state]
        table = torch.cat(parts)  # released: 151,936 + 128 rows; transformers 5.24: two equal halves
        state["llm.embed_tokens.weight"] = table[: config.llm.vocab_size]
        state["llm.embed_tokens.new_weight"] = table[config.llm.vocab_size :]
    state = rename_keys(state, MOLMO2_TABLE + _projector_table(config))
    state = drop_keys(state, [unused_vision_blocks("vision.blocks.", config.vision.num_built_layers)])
    return fuse(state, "vision.blocks.", ("q_proj", "k_proj", "v_proj"), "qkv_proj")


def molmo2_vision(cfg: dict, state: dict, feature_layers: tuple[int, ...] | None = None) -> tuple[VisionConfig, dict]:
    """The vision encoder of a Molmo2 checkpoint: its config (feature layers overridable) and its weights."""
    full = molmo2_config(cfg)
    config = full.vision
    if feature_layers is not None:
        config.feature_layers = tuple(feature_layers)
    vision = subtree(molmo2_state_to_ours(state, full), "vision.")
    return config, drop_keys(vision, [unused_vision_blocks("blocks.", config.num_built_layers)])


def ours_to_molmo2_state(state: dict, config: NanoMolmo2Config) -> dict:
    """NanoMolmo2 names -> Molmo2 names, as transformers' Molmo2ForConditionalGeneration loads them."""
    state = dict(state)
    embed, new_embed = state.pop("llm.embed_tokens.weight"), state.pop("llm.embed_tokens.new_weight")
    if "llm.lm_head.weight" not in state:  # tied LM: Molmo2 files carry an explicit head
        state["llm.lm_head.weight"] = embed
    state = split_fused(state, "vision.blocks.", "qkv_proj", ("q_proj", "k_proj", "v_proj"))
    state = rename_keys(state, reverse(MOLMO2_TABLE + _projector_table(config)))
    # Released split: the base rows, then the 128 Molmo2 rows. Copies, as safetensors refuses shared storage.
    state[WTE], state[WTE_NEW] = embed.clone(), new_embed.clone()
    state["lm_head.weight"] = state["lm_head.weight"].clone()
    return state
