"""FLOP counts for throughput and MFU (model FLOP utilisation), nanochat / PaLM style.

Training a decoder costs 6 FLOPs per parameter per token (forward 2, backward 4) plus the attention
score and value products, 12 x layers x heads x head_dim x context per token (context: the tokens each
token attends to, about half the sequence for causal attention). The vision encoder's forward costs
2 FLOPs per parameter per patch plus its attention (x3 when it is trained too). Embedding tables are
lookups and cost nothing; the output head is a matmul and counts.
"""

from __future__ import annotations

import torch

from ..models.config import NanoMolmo2Config

# Dense bf16 peak FLOP/s by device-name fragment (tensor cores, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def llm_flops_per_token(config: NanoMolmo2Config, context: float) -> float:
    llm = config.llm
    attention = (
        llm.hidden_size * (llm.num_heads + 2 * llm.num_kv_heads) * llm.head_dim
        + llm.num_heads * llm.head_dim * llm.hidden_size
    )
    mlp = 3 * llm.hidden_size * llm.intermediate_size
    params = llm.num_layers * (attention + mlp) + llm.hidden_size * llm.vocab_size  # + the output head
    return 6 * params + 12 * llm.num_layers * llm.num_heads * llm.head_dim * context


def vision_flops_per_crop(config: NanoMolmo2Config, trained: bool = False) -> float:
    vision = config.vision
    d, n = vision.hidden_size, vision.num_patches
    params = vision.num_built_layers * (4 * d * d + 2 * d * vision.intermediate_size)
    forward = 2 * params * n + 4 * vision.num_built_layers * d * n * n
    return forward * (3 if trained else 1)


def step_flops(config: NanoMolmo2Config, tokens: int, crops: int, context: float, vision_trained: bool) -> float:
    """Model FLOPs of one training step: `tokens` LLM tokens and `crops` ViT crops (images and frames)."""
    return tokens * llm_flops_per_token(config, context) + crops * vision_flops_per_crop(config, vision_trained)
