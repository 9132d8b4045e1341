"""The training data stream: mixture -> (worker processes) load + tokenise -> (main process) pack -> batches.

DataLoader workers do the heavy part (decode, resize, tokenise) for stream positions handed out in order;
the main process packs the examples into fixed-size batches. An item that cannot be used (a missing or
corrupt image, a malformed annotation, more tokens than `seq_len`) is logged with its path and the reason,
counted (`DataStream.skipped`, by reason), and skipped.

The stream resumes exactly: `state()` is the next mixture position plus the positions of the examples
still waiting in the packer, which are fetched again first after a restart.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import PIL.Image
import torch

from .examples import TokenizedExample, tokenize_example
from .mixture import Mixture
from .packing import Packer
from .processor import Processor

log = logging.getLogger(__name__)
# What a bad media file or row raises while being loaded; anything else is a bug and propagates.
SKIPPABLE_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, PIL.Image.DecompressionBombError)


@dataclass
class Skipped:
    origin: tuple[int, int, int]
    source: str
    reason: str


class ExampleSource(torch.utils.data.Dataset):
    """Item (position, dataset, row) of a mixture -> a TokenizedExample, or Skipped with the reason."""

    def __init__(self, mixture: Mixture, processor: Processor, weighting: str = "none"):
        self.mixture, self.processor, self.weighting = mixture, processor, weighting

    def __len__(self) -> int:  # the stream is endless; DataLoader only needs a number
        return 2**62

    def __getitem__(self, origin: tuple[int, int, int]) -> TokenizedExample | Skipped:
        _, dataset, row = origin
        source = f"dataset {dataset} row {row}"
        try:
            example = self.mixture.datasets[dataset][row]
            source = example.source or source
            tokenized = tokenize_example(example, self.processor, self.weighting)
        except SKIPPABLE_ERRORS as e:
            return Skipped(origin, source, f"{type(e).__name__}: {e}")
        tokenized.origin = origin
        return tokenized


class _Origins(torch.utils.data.Sampler):
    """Stream positions for the workers: first the ones to fetch again, then this shard's share onward."""

    def __init__(self, mixture: Mixture, start: int, pending: list, shard: tuple[int, int]) -> None:
        self.mixture, self.start, self.pending, self.shard = mixture, start, pending, shard

    def __iter__(self):
        yield from self.pending
        index, count = self.shard
        yield from (origin for origin in self.mixture.stream(self.start) if origin[0] % count == index)


class DataStream:
    """Endless packed batches from a mixture; `state()` / `state=` resume it exactly.

    shard (index, count): this stream uses only the mixture positions p with p % count == index. Training
    splits the mixture into one shard per micro-batch of a step (ranks x accumulation steps), so the data of
    a step is the same whatever mix of ranks and accumulation produces it.
    """

    def __init__(
        self,
        mixture: Mixture,
        processor: Processor,
        rows: int,
        seq_len: int,
        num_workers: int = 0,
        weighting: str = "none",
        state: dict | None = None,
        pin_memory: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        state = state or {"next_position": 0, "pending": []}
        self.pin_memory = pin_memory  # page-locked batches copy to the GPU asynchronously
        self.packer = Packer(rows, seq_len)
        self.unusable: Counter[str] = Counter()  # items the workers could not load, by reason
        self._next_position = state["next_position"]
        self._loader = torch.utils.data.DataLoader(
            ExampleSource(mixture, processor, weighting),
            batch_size=None,
            sampler=_Origins(mixture, state["next_position"], [tuple(p) for p in state["pending"]], shard),
            num_workers=num_workers,
            collate_fn=lambda item: item,
            prefetch_factor=4 if num_workers else None,
            persistent_workers=num_workers > 0,
        )

    @property
    def skipped(self) -> Counter[str]:
        """Every item skipped so far, by reason: unusable ones, and those longer than `seq_len` (the packer's)."""
        return self.unusable + Counter({"too long": self.packer.stats.skipped_too_long})

    def state(self) -> dict:
        """Where to restart: the examples still in the packer are fetched again, then the stream goes on."""
        return {"next_position": self._next_position, "pending": [list(e.origin) for e in self.packer.pending]}

    def __iter__(self) -> Iterator[dict]:
        for item in self._loader:
            if item.origin[0] >= self._next_position:
                self._next_position = item.origin[0] + 1
            if isinstance(item, Skipped):
                self.unusable[item.reason.split(":")[0]] += 1
                log.warning("skipped %s: %s", item.source, item.reason)
                continue
            batch = self.packer.add(item)
            if batch is not None:
                yield {k: v.pin_memory() if self.pin_memory and torch.is_tensor(v) else v for k, v in batch.items()}
