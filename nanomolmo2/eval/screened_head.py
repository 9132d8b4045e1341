"""Exact greedy decoding, faster on a CPU: an int8 copy of the output head screens the vocabulary, and the fp32
head decides among the few tokens that could still win.

Reading the fp32 head costs every decoded token `vocab x D x 4` bytes (151,936 x 256 floats: 155 MB, ~10 ms on
one core); the int8 copy is a quarter of that and runs through torch's int8-weight kernel. Row r of the head,
`w_r`, is stored as `s_r q_r`: int8 `q_r` and a bf16 scale `s_r >= max|w_r| / 127` (rounded up, so no entry is
clipped and each is off by at most `s_r / 2`). For a hidden state `h` (true score `z_r = h . w_r`) the kernel
returns `o_r`: `bf16(h) . (s_r q_r)`, accumulated in fp32 and rounded to bf16. Its distance to `z_r`, per row:

    |z_r - o_r| <= |h| |w_r - s_r q_r|              the int8 rounding of the row (Cauchy-Schwarz):
                                                    |w_r - s_r q_r| <= sqrt(D) s_r / 2
                 + |h - bf16(h)| |s_r q_r|          the bf16 rounding of h: <= 2^-9 |h| (|w_r| + sqrt(D) s_r / 2)
                 + 1e-4 |h| |s_r q_r|               fp32 accumulation, here and in the fp32 head (D <~ 1,600)
                 + 2^-7 |o_r|                       the bf16 rounding of the result (2^-8 / (1 - 2^-8) < 2^-7)

i.e. `b_r = |h| R_r + 2^-7 |o_r|` with `R_r` fixed per row. The argmax of the fp32 head is among the rows whose
upper bound `o_r + b_r` reaches the best lower bound `max_j (o_j - b_j)`: usually a handful. Those rows are
scored again in fp32 and the best one wins, ties to the lowest id as `argmax` does. So the token is the fp32
head's (two rows within fp32 rounding of each other are a tie either way). Sampling (temperature > 0) needs
every logit and keeps the full head.
"""

from __future__ import annotations

import torch

from ..models.nanomolmo2 import NanoMolmo2

MIN_ROWS = 16384  # below this (a restricted output vocabulary) the full head is cheap: no screening
# torch's int8-weight kernel (`_weight_int8pack_mm`) returns wrong sums, or crashes, for a batch of several hidden
# states whose width is not a multiple of 16 (measured on this CPU: widths 24, 40, 56 wrong at batch 3; 32, 48, 64,
# 80, 1024 right). Such heads (tiny test models only: Qwen3's are 1,024+ wide) keep the full fp32 head.
KERNEL_WIDTH = 16


class ScreenedHead:
    """`head(h)` -> the rows of `weight` with the largest `h . row`, for hidden states `h` `[B, D]`."""

    def __init__(self, weight: torch.Tensor) -> None:
        weight = weight.detach().float()
        bound = weight.abs().amax(dim=1) / 127
        # bf16 rounds to nearest (relative error <= 2^-8): scaling up by 2^-7 first makes the bf16 scale >= bound
        self.scale = (bound * (1 + 2**-7)).clamp(min=torch.finfo(torch.bfloat16).tiny).bfloat16()
        self.int8 = torch.round(weight / self.scale.float()[:, None]).to(torch.int8)  # |entries| <= 127
        row_error = weight.shape[1] ** 0.5 * self.scale.float() / 2  # >= |w_r - s_r q_r|
        self.row_bound = row_error + (2**-9 + 1e-4) * (weight.norm(dim=1) + row_error)  # R_r
        self.weight = weight

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.float()
        scores = torch._weight_int8pack_mm(h.bfloat16(), self.int8, self.scale).float()  # [B, V]
        bound = torch.add(h.norm(dim=1, keepdim=True) * self.row_bound, scores.abs(), alpha=2**-7)
        floor = (scores - bound).amax(dim=1, keepdim=True)
        possible = scores + bound >= floor  # [B, V]: rows that may hold the fp32 maximum
        rows = possible.any(0).nonzero().squeeze(1)
        if rows.numel() == 0:  # NaN hidden states rule out every row (an inf one rules in every row)
            return (h @ self.weight.t()).argmax(-1)  # whatever the full head says
        exact = (h @ self.weight[rows].t()).masked_fill(~possible[:, rows], float("-inf"))
        return rows[exact.argmax(-1)]


def greedy_head(model: NanoMolmo2) -> ScreenedHead | None:
    """The model's screened head (built once, rebuilt when the head's weights change), or None where it does not
    pay or does not apply: a GPU, a restricted output vocabulary, a head that is not fp32."""
    llm = model.llm
    weight = llm.embed_tokens.weight if llm.lm_head is None else llm.lm_head.weight
    small = llm.output_vocabulary.restricted or weight.shape[0] < MIN_ROWS or weight.shape[1] % KERNEL_WIDTH
    if small or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    cached = getattr(model, "_screened_head", None)
    if cached is None or cached[0] != key:
        cached = (key, ScreenedHead(weight))
        model._screened_head = cached  # a plain attribute: not a parameter, not saved
    return cached[1]
