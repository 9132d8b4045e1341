"""The connector: pools windows of ViT patch features into vision tokens and projects them to the LLM width.

`pooling_idx` `[tokens, window]` lists, for every vision token, the flat indices (into all patches of all
crops) of the patches it pools: a 2x2 window for images, 3x3 for video frames; -1 marks padding where a
window runs past the patch grid.

- "attention" (Molmo2): multi-head attention whose single query is the mean of the window's valid
  patches and whose keys/values are those patches, then a SwiGLU projector.
- "linear" / "mlp" (teaching options): average the window, then a Linear or a 2-layer MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConnectorConfig


class AttentionPooling(nn.Module):
    def __init__(self, in_dim: int, num_heads: int, head_dim: int, out_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q_proj = nn.Linear(in_dim, num_heads * head_dim)
        self.k_proj = nn.Linear(in_dim, num_heads * head_dim)
        self.v_proj = nn.Linear(in_dim, num_heads * head_dim)
        self.o_proj = nn.Linear(num_heads * head_dim, out_dim)

    def forward(self, query: torch.Tensor, patches: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """query `[T, C]`, patches `[T, W, C]`, valid `[T, W]` -> `[T, out_dim]`."""
        T, W, _ = patches.shape
        q = self.q_proj(query).view(T, 1, self.num_heads, self.head_dim).transpose(1, 2)  # [T, H, 1, hd]
        k = self.k_proj(patches).view(T, W, self.num_heads, self.head_dim).transpose(1, 2)  # [T, H, W, hd]
        v = self.v_proj(patches).view(T, W, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])  # [T, H, 1, hd]
        return self.o_proj(out.reshape(T, self.num_heads * self.head_dim))


class SwiGLUProjector(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases (Molmo2's image_projector: w1 = gate, w3 = up, w2 = down)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(in_dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(in_dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Connector(nn.Module):
    def __init__(self, config: ConnectorConfig, vision_dim: int, llm_dim: int) -> None:
        """vision_dim: channels of the concatenated ViT features; llm_dim: the LLM's hidden size."""
        super().__init__()
        self.config = config
        self.pool = None
        if config.kind == "attention":
            self.pool = AttentionPooling(vision_dim, config.pool_heads, config.pool_head_dim, config.pool_hidden_size)
            self.projector = SwiGLUProjector(config.pool_hidden_size, config.projector_hidden_size, llm_dim)
        elif config.kind == "linear":
            self.projector = nn.Linear(vision_dim, llm_dim)
        elif config.kind == "mlp":
            self.projector = nn.Sequential(
                nn.Linear(vision_dim, config.projector_hidden_size),
                nn.GELU(),
                nn.Linear(config.projector_hidden_size, llm_dim),
            )
        else:
            raise ValueError(f"unknown connector kind {config.kind!r}: use 'attention', 'linear' or 'mlp'")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fan-in scaled weights: vision tokens start at about unit scale, well above the token embeddings
        they are added to, so a fresh model sees the image from the first step (with a 0.02-std init the
        projected features vanish next to the embeddings and training sits on a "blind" plateau)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor, pooling_idx: torch.Tensor) -> torch.Tensor:
        """features `[crops, patches, C]`, pooling_idx `[tokens, window]` -> `[valid tokens, llm_dim]`.

        Tokens whose window holds no valid patch are dropped (as in Molmo2); the processor never emits any.
        """
        flat = features.reshape(-1, features.shape[-1])  # [crops * patches, C]
        valid = pooling_idx >= 0
        keep = valid.any(-1)
        pooling_idx, valid = pooling_idx[keep], valid[keep]
        patches = flat[pooling_idx.clamp(min=0)] * valid[..., None].to(flat.dtype)  # [T, W, C]
        mean = patches.sum(1) / valid.sum(1, keepdim=True).to(flat.dtype)  # [T, C]
        pooled = mean if self.pool is None else self.pool(mean, patches, valid)
        return self.projector(pooled)
