"""Attention masks and the KV cache of the language model.

The decoder is causal, with three refinements Molmo2 needs:
- vision tokens of one example attend to each other in both directions (one bidirectional block);
- packed sequences: `segment_ids` keep each example to itself;
- several annotations of one image: `annotation_ids` (0 = the shared prefix holding the image, k = the
  k-th annotation) let each annotation see the prefix and itself, never another annotation;
- padding: `attention_mask` (1 = real token) hides padded keys.
`attention_rule` states this once, as a function of (batch, head, query position, key position) index
tensors: FlexAttention's `mask_mod` (flex.py builds a block mask from it, for training), and evaluated densely
by `build_attention_mask` as a boolean `[B, 1, q_len, kv_len]` mask for `F.scaled_dot_product_attention`
(None when plain causal attention is enough: then SDPA's `is_causal` fast path is used).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import LanguageModelConfig

Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def attention_rule(
    attention_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    annotation_ids: torch.Tensor | None = None,
    vision_mask: torch.Tensor | None = None,
) -> Rule | None:
    """`rule(b, h, q, k)` -> may query position q of row b attend to key position k; None for plain causal.

    The id tensors are `[B, kv_len]`, covering every key position (queries index them by absolute position).
    """
    if attention_mask is None and segment_ids is None and annotation_ids is None and vision_mask is None:
        return None
    vision = None if vision_mask is None else vision_mask.bool()
    real = None if attention_mask is None else attention_mask.bool()

    def rule(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        allowed = k <= q
        if vision is not None:
            allowed = allowed | (vision[b, q] & vision[b, k])
        if segment_ids is not None:
            allowed = allowed & (segment_ids[b, q] == segment_ids[b, k])
        if annotation_ids is not None:
            allowed = allowed & ((annotation_ids[b, k] == 0) | (annotation_ids[b, q] == annotation_ids[b, k]))
        if real is not None:
            allowed = allowed & real[b, k]
        # A padded query with nothing to attend to would give NaN, which then leaks through 0-weight
        # products into real tokens; letting every token see itself keeps all rows finite.
        return allowed | (k == q)

    return rule


def build_attention_mask(
    q_len: int,
    kv_len: int,
    *,
    attention_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    annotation_ids: torch.Tensor | None = None,
    vision_mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Mask for `q_len` new tokens that follow `kv_len - q_len` cached ones.

    attention_mask, segment_ids, annotation_ids, vision_mask: `[B, kv_len]`, covering every key position.
    """
    ids = [t for t in (attention_mask, segment_ids, annotation_ids, vision_mask) if t is not None]
    rule = attention_rule(attention_mask, segment_ids, annotation_ids, vision_mask)
    if rule is None:
        return None  # plain causal (or a single new token that may see everything before it)
    device = device or ids[0].device
    b = torch.arange(ids[0].shape[0], device=device)[:, None, None]  # [B, 1, 1]
    q = torch.arange(kv_len - q_len, kv_len, device=device)[None, :, None]  # [1, q, 1]
    k = torch.arange(kv_len, device=device)[None, None, :]  # [1, 1, k]
    return rule(b, None, q, k)[:, None]  # [B, 1, q, k]


class KVCache:
    """Preallocated keys/values for every layer: `[layers, B, kv_heads, max_len, head_dim]`."""

    def __init__(
        self,
        config: LanguageModelConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (config.num_layers, batch_size, config.num_kv_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # tokens already stored (same for every layer once a forward pass ends)

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store `[B, kv_heads, T, head_dim]` new keys/values of one layer; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} tokens > max_len {self.max_len}")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens
