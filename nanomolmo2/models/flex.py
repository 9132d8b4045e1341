"""FlexAttention for training: the attention rule as a block mask, and a kernel that skips what the mask hides.

With a dense `[B, 1, L, L]` mask, SDPA computes every query-key pair of a packed row and keeps the L^2 mask
(plus an L^2 bias per call). FlexAttention takes the rule of attention.py itself as `mask_mod`; the BlockMask
built from it (once per forward, shared by every layer) lists the 128 x 128 tiles that the rule leaves empty
(other examples, the causal upper half, other annotations), which the kernel skips, and those it leaves full,
where it does not evaluate the rule. Grouped-query attention is native (`enable_gqa`, no repeated kv heads).

Compiled on CUDA (Triton kernels; uncompiled, flex_attention runs a dense reference implementation).
PyTorch has no FlexAttention backward on CPU: there the forward runs (tests compare it with SDPA), and
training uses SDPA.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .attention import Rule

COMPILED_ON = ("cuda",)  # devices where the block mask and the kernel are compiled (tests add "cpu")


@functools.cache
def _compiled(function):
    return torch.compile(function, dynamic=False)


def block_mask(rule: Rule, batch: int, length: int, device: torch.device) -> BlockMask:
    """The BlockMask of `rule` for `batch` rows of `length` tokens (queries and keys), the same for every head."""
    build = _compiled(create_block_mask) if device.type in COMPILED_ON else create_block_mask
    return build(rule, batch, None, length, length, device=device)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask) -> torch.Tensor:
    """q `[B, H, L, hd]`, k / v `[B, KV, L, hd]` -> `[B, H, L, hd]`."""
    attend = _compiled(flex_attention) if q.device.type in COMPILED_ON else flex_attention
    return attend(q, k, v, block_mask=mask, enable_gqa=True)
