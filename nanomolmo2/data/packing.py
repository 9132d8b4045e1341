"""Batches: padding, and packing several examples into one fixed-length sequence.

Packing puts whole examples (never a part: vision tokens are never cut) into rows of `seq_len` tokens. The training
stream truncates over-long examples to `seq_len` before they get here (examples.py, Molmo2's rule); one that is
still longer (an example tokenised without `max_len`) is skipped and counted (`PackingStats.skipped_too_long`).
Inside a row, `segment_ids` keep examples apart and `position_ids` restart for every example (and for
every conversation after an example's shared image prefix, see examples.py). The vision inputs of all
examples are concatenated in token order, with pooling indices shifted past the crops before them, so the
model's `<im_patch>` slots are filled in order. Packing efficiency = real tokens / all token slots.

The collator also does, on the host, what the device should not have to wait for: it checks the labels (no
special token can be a target) and lists the loss positions (`loss_positions`, `[N, 2]` row and position of
every label that carries loss), so the loss selects them without counting on the GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..tokens import IGNORE_INDEX, PAD_ID, QWEN3_VOCAB_SIZE
from .examples import TokenizedExample
from .processor import merge_vision_inputs

log = logging.getLogger(__name__)


@dataclass
class PackingStats:
    examples: int = 0
    real_tokens: int = 0
    token_slots: int = 0
    skipped_too_long: int = 0

    @property
    def efficiency(self) -> float:
        return self.real_tokens / max(self.token_slots, 1)


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices, each summing to <= capacity: longest items first, each into the first bin it fits."""
    bins: list[list[int]] = []
    space: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(space):
            if lengths[i] <= free:
                bins[b].append(i)
                space[b] -= lengths[i]
                break
        else:
            bins.append([i])
            space.append(capacity - lengths[i])
    return bins


def collate(rows: list[list[TokenizedExample]], seq_len: int | None = None, pad_id: int = PAD_ID) -> dict:
    """Rows of examples -> a batch of tensors `[len(rows), seq_len]` (default: the longest row).

    attention_mask is 1 on real tokens; padding has segment id -1, label IGNORE_INDEX and weight 0.
    A label outside the base vocabulary (a special or vision token) is a ValueError naming the example.
    """
    width = seq_len or max(sum(len(e) for e in row) for row in rows)
    shape = (len(rows), width)
    batch = {
        "input_ids": torch.full(shape, pad_id),
        "labels": torch.full(shape, IGNORE_INDEX),
        "loss_weights": torch.zeros(shape),
        "position_ids": torch.zeros(shape, dtype=torch.long),
        "segment_ids": torch.full(shape, -1),
        "annotation_ids": torch.zeros(shape, dtype=torch.long),
        "mm_token_type_ids": torch.zeros(shape, dtype=torch.long),
        "attention_mask": torch.zeros(shape, dtype=torch.long),
    }
    vision = []
    for r, row in enumerate(rows):
        start = 0
        for s, example in enumerate(row):
            end = start + len(example)
            if bool((example.labels >= QWEN3_VOCAB_SIZE).any()):
                raise ValueError(
                    f"{example.source or 'an example'}: label {int(example.labels.max())} is a special (vision) "
                    "token; special tokens cannot be targets (set their labels to IGNORE_INDEX)"
                )
            for key in ("input_ids", "labels", "loss_weights", "position_ids", "annotation_ids", "mm_token_type_ids"):
                batch[key][r, start:end] = getattr(example, key)
            batch["segment_ids"][r, start:end] = s
            batch["attention_mask"][r, start:end] = 1
            vision += example.vision
            start = end
    if vision:
        batch["pixel_values"], batch["image_token_pooling"] = merge_vision_inputs(vision)
    batch["loss_positions"] = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero()  # [N, 2]
    return batch


class Packer:
    """Packs a stream of examples into batches of `rows` x `seq_len` tokens.

    Examples are buffered (about `lookahead` batches' worth of tokens) and packed first-fit-decreasing;
    the `rows` fullest bins form a batch and the rest stay buffered, so efficiency stays high while the
    order of the stream is kept roughly. `pending` lists the buffered examples (for exact resumption).
    """

    def __init__(self, rows: int, seq_len: int, pad_id: int = PAD_ID, lookahead: int = 4) -> None:
        self.rows, self.seq_len, self.pad_id, self.lookahead = rows, seq_len, pad_id, lookahead
        self.pending: list[TokenizedExample] = []
        self.stats = PackingStats()

    def _batch_from_pending(self) -> dict:
        bins = first_fit_decreasing([len(e) for e in self.pending], self.seq_len)
        bins.sort(key=lambda b: -sum(len(self.pending[i]) for i in b))
        chosen = sorted(bins[: self.rows], key=lambda b: min(b))  # keep stream order between rows
        used = {i for b in chosen for i in b}
        rows = [[self.pending[i] for i in sorted(b)] for b in chosen]
        self.pending = [e for i, e in enumerate(self.pending) if i not in used]
        batch = collate(rows, self.seq_len, self.pad_id)
        real = int(batch["attention_mask"].sum())
        self.stats.examples += sum(len(r) for r in rows)
        self.stats.real_tokens += real
        self.stats.token_slots += self.rows * self.seq_len
        batch["num_examples"] = sum(len(r) for r in rows)
        batch["origins"] = [e.origin for row in rows for e in row]  # where the examples came from (for resuming)
        batch["packing_efficiency"] = real / (self.rows * self.seq_len)
        return batch

    def add(self, example: TokenizedExample) -> dict | None:
        """Buffer one example; return a batch when enough tokens are buffered, else None."""
        if len(example) > self.seq_len:
            self.stats.skipped_too_long += 1
            log.warning(
                "skipped %s: %d tokens > seq_len %d", example.source or "an example", len(example), self.seq_len
            )
            return None
        self.pending.append(example)
        if sum(len(e) for e in self.pending) >= self.lookahead * self.rows * self.seq_len:
            return self._batch_from_pending()
        return None

    def pack(self, examples: Iterable[TokenizedExample]) -> Iterator[dict]:
        """All batches of a finite stream; the last one may have fewer full rows (padding fills the rest)."""
        for example in examples:
            batch = self.add(example)
            if batch is not None:
                yield batch
        while self.pending:
            yield self._batch_from_pending()
