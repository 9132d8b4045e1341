"""FLOP counts for throughput and MFU (model FLOP utilisation), nanochat / PaLM style, from the real batch.

The decoder blocks' matmuls cost 6 FLOPs per parameter per token (forward 2, backward 4). The output head is a
matmul too, but the model computes logits only where the loss is: 6 x hidden x head rows per loss token.
Attention adds 12 x layers x heads x head_dim FLOPs per query-key pair that the mask allows (scores and
values, forward and backward), and the pairs are counted from the batch's own segment, annotation and vision
ids (attention.py's rule), not assumed: a packed row of short examples holds far fewer pairs than L^2 / 2.
The vision encoder's forward costs 2 FLOPs per parameter per patch plus its attention, per crop (x3 when it
is trained). Embedding lookups cost nothing; recomputation under activation checkpointing is not counted.
The trainer (MFU of every step) and bench/gpu.py use the same count.
"""

from __future__ import annotations

import torch

from ..models.config import NanoMolmo2Config
from ..tokens import IGNORE_INDEX

# Dense bf16 peak FLOP/s by device-name fragment (tensor cores, no sparsity); the first match wins.
PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "4090": 165e12,
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def decoder_flops_per_token(config: NanoMolmo2Config) -> float:
    """6 x the parameters of the decoder blocks' matmuls (q/k/v/o and the SwiGLU MLP)."""
    llm = config.llm
    attention = (llm.num_heads + 2 * llm.num_kv_heads) * llm.head_dim * llm.hidden_size
    attention += llm.num_heads * llm.head_dim * llm.hidden_size
    return 6 * llm.num_layers * (attention + 3 * llm.hidden_size * llm.intermediate_size)


def head_flops_per_loss_token(config: NanoMolmo2Config) -> float:
    """6 x hidden x the rows the head scores (the restricted output vocabulary's, if any)."""
    rows = len(set(config.llm.output_token_ids)) or config.llm.vocab_size
    return 6 * config.llm.hidden_size * rows


def attention_flops_per_pair(config: NanoMolmo2Config) -> float:
    llm = config.llm
    return 12 * llm.num_layers * llm.num_heads * llm.head_dim


def vision_flops_per_crop(config: NanoMolmo2Config, trained: bool = False) -> float:
    vision = config.vision
    d, n = vision.hidden_size, vision.num_patches
    params = vision.num_built_layers * (4 * d * d + 2 * d * vision.intermediate_size)
    forward = 2 * params * n + 4 * vision.num_built_layers * d * n * n
    return forward * (3 if trained else 1)


def _group_counts(columns: torch.Tensor, include: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every position q of `columns` `[N, c]`: how many k <= q, and how many k in all, have the same
    columns as q and include[k]."""
    # One int64 key per row (mixed radix over the columns): torch.unique over rows (dim=0) compares them one
    # pair at a time on CPUs (~16 ms a call, 4 calls per micro-batch of the tiny demo); over scalars it is a sort.
    key = torch.zeros(columns.shape[0], dtype=torch.long)
    for column in columns.long().T:
        column = column - column.min()
        key = key * (int(column.max()) + 1) + column
    groups = torch.unique(key, return_inverse=True)[1]  # [N] group of each position
    include = include.long()
    total = torch.zeros(int(groups.max()) + 1, dtype=torch.long).index_add_(0, groups, include)[groups]
    order = torch.sort(groups, stable=True).indices  # group by group, positions in order within each
    ordered, counts = groups[order], include[order].cumsum(0)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = torch.where(starts, torch.arange(len(order)), 0).cummax(0).values  # each one's group start
    running = torch.empty_like(counts)
    running[order] = counts - counts[first] + include[order][first]
    return running, total


def attention_pairs(
    shape: tuple[int, int],
    segment_ids: torch.Tensor | None = None,
    annotation_ids: torch.Tensor | None = None,
    vision_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> int:
    """The number of query-key pairs attention.py's rule allows in a `[B, L]` batch (= its dense mask's sum),
    counted in O(L log L) without building the mask: a query q of example s and annotation a sees the keys
    k <= q of s in the prefix (annotation 0) or in a; a vision query also sees the later vision keys of the
    same kind; padded keys are hidden, and a padded query sees itself."""
    B, L = shape
    row = torch.arange(B).repeat_interleave(L)
    seg = torch.zeros(B * L, dtype=torch.long) if segment_ids is None else segment_ids.reshape(-1).long()
    ann = torch.zeros(B * L, dtype=torch.long) if annotation_ids is None else annotation_ids.reshape(-1).long()
    vision = torch.zeros(B * L, dtype=torch.bool) if vision_mask is None else vision_mask.reshape(-1).bool()
    real = torch.ones(B * L, dtype=torch.bool) if attention_mask is None else attention_mask.reshape(-1).bool()
    example, annotation = torch.stack([row, seg], 1), torch.stack([row, seg, ann], 1)
    own = ann != 0  # a query outside the prefix also sees its own annotation's keys
    prefix_seen, _ = _group_counts(example, real & (ann == 0))
    own_seen, _ = _group_counts(annotation, real)
    causal = prefix_seen + own * own_seen  # keys k <= q
    prefix_vision, prefix_vision_all = _group_counts(example, real & (ann == 0) & vision)
    own_vision, own_vision_all = _group_counts(annotation, real & vision)
    later_vision = (prefix_vision_all - prefix_vision) + own * (own_vision_all - own_vision)  # keys k > q
    return int(causal.sum() + (vision * later_vision).sum() + (~real).sum())


def batch_flops(config: NanoMolmo2Config, batch: dict, vision_trained: bool = False) -> float:
    """Model FLOPs of one training micro-batch (the collator's host tensors): decoder per real token, head per
    loss token, attention per allowed pair, vision encoder per crop."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None else ids.numel()
    if "loss_positions" in batch:
        loss_tokens = batch["loss_positions"].shape[0]
    else:
        loss_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) if "labels" in batch else 0
    crops = sum(batch[k].shape[:-2].numel() for k in ("pixel_values", "pixel_values_videos") if k in batch)
    vision = batch.get("mm_token_type_ids")
    pairs = attention_pairs(
        tuple(ids.shape), batch.get("segment_ids"), batch.get("annotation_ids"),
        None if vision is None else vision > 0, mask,
    )  # fmt: skip
    return (
        tokens * decoder_flops_per_token(config)
        + loss_tokens * head_flops_per_loss_token(config)
        + pairs * attention_flops_per_pair(config)
        + crops * vision_flops_per_crop(config, vision_trained)
    )
