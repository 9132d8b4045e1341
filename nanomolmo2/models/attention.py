"""Attention masks and the KV cache of the language model.

The decoder is causal, with three refinements Molmo2 needs:
- vision tokens of one example attend to each other in both directions (one bidirectional block);
- packed sequences: `segment_ids` keep each example to itself;
- several annotations of one image: `annotation_ids` (0 = the shared prefix holding the image, k = the
  k-th annotation) let each annotation see the prefix and itself, never another annotation;
- padding: `attention_mask` (1 = real token) hides padded keys.
The mask is a boolean `[B, 1, q_len, kv_len]` tensor (True = may attend) for `F.scaled_dot_product_attention`,
or None when plain causal attention is enough (then SDPA's `is_causal` fast path is used).
"""

from __future__ import annotations

import torch

from .config import LanguageModelConfig


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
    if attention_mask is None and segment_ids is None and annotation_ids is None and vision_mask is None:
        return None  # plain causal (or a single new token that may see everything before it)
    offset = kv_len - q_len
    q_pos = torch.arange(offset, kv_len, device=device)[:, None]  # [q, 1]
    k_pos = torch.arange(kv_len, device=device)[None, :]  # [1, k]
    allowed = (k_pos <= q_pos)[None]  # [1, q, k]
    if vision_mask is not None:
        vision = vision_mask.bool()
        allowed = allowed | (vision[:, offset:, None] & vision[:, None, :])
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, offset:, None] == segment_ids[:, None, :])
    if annotation_ids is not None:
        key_annotation = annotation_ids[:, None, :]
        allowed = allowed & ((key_annotation == 0) | (annotation_ids[:, offset:, None] == key_annotation))
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    # A padded query with nothing to attend to would give NaN, which then leaks through 0-weight
    # products into real tokens; letting every token see itself keeps all rows finite.
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]  # [B, 1, q, k]


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
