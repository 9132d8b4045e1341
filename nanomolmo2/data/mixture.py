"""Data mixtures: fixed rates between groups, sqrt-proportional sampling inside a group.

Molmo2 trains on groups of datasets with fixed rates (stage 1: 60% captions, 30% pointing/counting,
10% text-only) and samples a dataset inside its group with probability proportional to the square root of
its size, so a huge dataset does not drown the small ones (docs/MOLMO2.md, Sampling). A dataset can say
otherwise (`Weighted`): a size that stands in for its own (Molmo2 caps some, e.g. 100,000 captions), a
fraction of it, or 0 for "one share", times a sampling rate.

The stream is a pure function of (seed, position): draw k picks a dataset from a seeded RNG, and the
dataset's n-th draw is row `permutation_epoch[n % size]` (a fresh permutation every epoch, so rows are
seen evenly). Resuming at a position replays only the cheap dataset choices, never any data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CHUNK = 4096  # dataset choices are drawn in chunks of this many positions


@dataclass
class Weighted:
    """A dataset with Molmo2's sampling overrides: `size` None = its own length; < 1 = that fraction of it;
    >= 1 = this many rows (a cap or a stand-in); 0 = one share whatever its size. `rate` multiplies its share."""

    dataset: Sequence
    size: float | None = None
    rate: float = 1.0

    def share(self) -> float:
        """The dataset's weight inside its group, before the group's rate: rate x sqrt(size)."""
        n = len(self.dataset)
        if self.size == 0:
            root = 1.0
        elif self.size is None:
            root = math.sqrt(n)
        elif self.size < 1:
            root = math.sqrt(n * self.size)
        else:
            root = math.sqrt(self.size)
        return self.rate * root


class Mixture:
    def __init__(self, groups: Sequence[tuple[float, Sequence[Sequence | Weighted]]], seed: int = 0) -> None:
        """groups: (rate, datasets) pairs, rates normalised over all groups; a dataset is anything with len(),
        or a `Weighted` one."""
        weighted = [[d if isinstance(d, Weighted) else Weighted(d) for d in datasets] for _, datasets in groups]
        self.datasets = [w.dataset for group in weighted for w in group]
        if not self.datasets or any(len(d) == 0 for d in self.datasets):
            raise ValueError("a mixture needs datasets, and none of them may be empty")
        probabilities = []
        for (rate, _), group in zip(groups, weighted, strict=True):
            shares = [w.share() for w in group]
            probabilities += [rate * share / sum(shares) for share in shares]
        self.probabilities = np.array(probabilities) / sum(probabilities)
        self.seed = seed

    def _choices(self, chunk: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, chunk])
        return rng.choice(len(self.datasets), size=CHUNK, p=self.probabilities)

    @lru_cache(maxsize=64)  # noqa: B019 - a mixture lives as long as its training run
    def _permutation(self, dataset: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, dataset, epoch]).permutation(len(self.datasets[dataset]))

    def _row(self, dataset: int, draw: int) -> int:
        epoch, offset = divmod(draw, len(self.datasets[dataset]))
        return int(self._permutation(dataset, epoch)[offset])

    def stream(self, start: int = 0) -> Iterator[tuple[int, int, int]]:
        """Yield (position, dataset index, row index) forever, from `start`."""
        draws = np.zeros(len(self.datasets), dtype=np.int64)  # how often each dataset was drawn before `start`
        first_chunk, skip = divmod(start, CHUNK)
        for chunk in range(first_chunk):
            draws += np.bincount(self._choices(chunk), minlength=len(self.datasets))
        chunk = first_chunk
        while True:
            choices = self._choices(chunk)
            draws += np.bincount(choices[:skip], minlength=len(self.datasets))
            for offset in range(skip, CHUNK):
                dataset = int(choices[offset])
                yield chunk * CHUNK + offset, dataset, self._row(dataset, int(draws[dataset]))
                draws[dataset] += 1
            chunk, skip = chunk + 1, 0

    def __getitem__(self, position: int):
        """The item at a stream position (a convenience for inspection; streaming is much faster)."""
        _, dataset, row = next(self.stream(position))
        return self.datasets[dataset][row]
