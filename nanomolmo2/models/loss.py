"""The language-modelling loss, computed only where it is needed.

Labels follow the Hugging Face convention: same length as `input_ids`, -100 = no loss, shifted inside
(the hidden state at position i predicts label i+1). The output head of a small model is its most
expensive layer (151,936 columns), so logits are computed only at the positions that carry loss.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def causal_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head_weight: torch.Tensor,
    *,
    loss_weights: torch.Tensor | None = None,
    z_loss_weight: float = 0.0,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, logits at the loss positions `[N, vocab]`).

    hidden: `[B, L, D]` final hidden states; labels: `[B, L]`; head_weight: `[vocab, D]`.
    loss_weights: optional `[B, L]` per-token weights aligned with `labels`.
    z_loss_weight: adds `z * logsumexp(logits)^2` per token (PaLM's z-loss, keeps logits from drifting).
    normalizer: divide the weighted sum by this (e.g. the token count of the whole global batch, so that
    gradient accumulation and data parallelism give the same loss); default: the number of loss tokens.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX  # [B, L-1]
    selected = hidden[:, :-1][keep]  # [N, D]
    logits = (selected @ head_weight.t()).float()  # [N, vocab]
    target_ids = targets[keep]
    if target_ids.numel() and int(target_ids.max()) >= head_weight.shape[0]:
        raise ValueError(
            f"label id {int(target_ids.max())} is outside the {head_weight.shape[0]}-token output vocabulary: "
            "special (vision) tokens cannot be targets; set their labels to -100"
        )
    log_normalizer = torch.logsumexp(logits, dim=-1)  # [N]
    token_loss = log_normalizer - logits.gather(1, target_ids[:, None]).squeeze(1)
    if z_loss_weight:
        token_loss = token_loss + z_loss_weight * log_normalizer.square()
    if loss_weights is not None:
        token_loss = token_loss * loss_weights[:, 1:][keep].float()
    if normalizer is None:
        normalizer = keep.sum().clamp(min=1)
    return token_loss.sum() / normalizer, logits
