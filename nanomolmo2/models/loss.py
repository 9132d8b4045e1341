"""The language-modelling loss, computed only where it is needed.

Labels follow the Hugging Face convention: same length as `input_ids`, IGNORE_INDEX (-100) = no loss, shifted inside
(the hidden state at position i predicts label i+1). The output head of a small model is its most
expensive layer (151,936 columns), so logits are computed only at the positions that carry loss, with
PyTorch's fused cross-entropy (one softmax pass forward and backward). When those logits would not fit
in `LOGITS_BUDGET` elements, they are computed in chunks that are recomputed during backward instead of
stored (the memory of one chunk, for one extra matmul). The loss positions can come precomputed from the
host (`loss_positions`, the collator's), so the device never has to count them: no host-device sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..tokens import IGNORE_INDEX

LOGITS_BUDGET = 2**28  # fp32 logits elements kept at once for backward (1 GiB)


def token_losses(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor, z_loss_weight: float):
    """Per-token cross-entropy (+ z-loss) of `[N, D]` hidden states; returns (losses `[N]`, logits `[N, V]`)."""
    logits = (hidden @ head_weight.t()).float()
    loss = F.cross_entropy(logits, targets, reduction="none")
    if z_loss_weight:
        # logsumexp = cross-entropy + the target's logit; the target logit is a cheap [N, D] dot product,
        # which spares a second pass over the [N, V] logits.
        target_logit = (hidden.float() * head_weight[targets].float()).sum(-1)
        loss = loss + z_loss_weight * (loss + target_logit).square()
    return loss, logits


def _chunk_losses(hidden, head_weight, targets, z_loss_weight):
    return token_losses(hidden, head_weight, targets, z_loss_weight)[0]


def causal_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head_weight: torch.Tensor,
    *,
    loss_weights: torch.Tensor | None = None,
    z_loss_weight: float = 0.0,
    normalizer: float | torch.Tensor | None = None,
    return_logits: bool = True,
    loss_positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (loss, logits at the loss positions `[N, vocab]`, or None when `return_logits` is False).

    hidden: `[B, L, D]` final hidden states; labels: `[B, L]`; head_weight: `[vocab, D]`.
    loss_weights: optional `[B, L]` per-token weights aligned with `labels`.
    z_loss_weight: adds `z * logsumexp(logits)^2` per token (PaLM's z-loss, keeps logits from drifting).
    normalizer: divide the weighted sum by this (e.g. the token count of the whole global batch, so that
    gradient accumulation and data parallelism give the same loss); default: the number of loss tokens.
    loss_positions: `[N, 2]` (row, position) where `labels[:, 1:] != IGNORE_INDEX`, if already known.
    """
    targets = labels[:, 1:]
    if loss_positions is None:
        loss_positions = (targets != IGNORE_INDEX).nonzero()  # counting them on a GPU waits for it
    rows, cols = loss_positions.unbind(-1)
    selected = hidden[rows, cols]  # [N, D]: the hidden state at position i predicts label i+1
    target_ids = targets[rows, cols]
    logits = None
    if return_logits or not torch.is_grad_enabled() or selected.shape[0] * head_weight.shape[0] <= LOGITS_BUDGET:
        token_loss, logits = token_losses(selected, head_weight, target_ids, z_loss_weight)
    else:
        chunk_size = max(1, LOGITS_BUDGET // head_weight.shape[0])
        token_loss = torch.cat(
            [
                checkpoint(_chunk_losses, h, head_weight, t, z_loss_weight, use_reentrant=False)
                for h, t in zip(selected.split(chunk_size), target_ids.split(chunk_size), strict=True)
            ]
        )
    if loss_weights is not None:
        token_loss = token_loss * loss_weights[:, 1:][rows, cols].float()
    if normalizer is None:
        normalizer = max(rows.shape[0], 1)
    return token_loss.sum() / normalizer, (logits if return_logits else None)
