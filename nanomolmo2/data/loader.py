"""The training data stream: mixture -> (worker processes) load + tokenise -> (main process) pack -> batches.

DataLoader workers do the heavy part (decode, resize, tokenise, truncate to `seq_len`) for stream positions handed
out in order; the main process packs the examples into fixed-size batches. Each position seeds the random choices of
its example (annotation order, transcript, crops: datasets.py), so they change between epochs and repeat on resume.

An item that cannot be used (a missing or corrupt image, a media path outside the data folder, a malformed
annotation, `<im_patch>` slots that do not match the vision tokens, media that alone fill `seq_len`) is logged with
its file:line and the reason, counted (`DataStream.skipped`, by reason), and skipped: one row can never stop the
stream, nor a resumed one. Data unusable as a whole does: 1,000 unusable items in a row, or more than half of the
last 1,000 (a missing media folder under a mixture that also holds text), stop it with the reason.

One stream serves all the data shards of a rank (one per micro-batch of a step: shards are what makes a step's
data the same on 1 process or 8) with ONE pool of workers: the positions of the shards are handed out in turn,
each example goes to its shard's packer, and the stream yields steps — one batch per shard.

The stream resumes exactly: `state()` is, per shard, the next mixture position plus the positions of the
examples still waiting (in its packer, or in batches packed but not yet handed out), which are fetched again
first after a restart.

For GPUs: a background thread packs and pins (page-locks) the next batches while the model computes, with
`state()` and `skipped` as of the last batch handed out; workers send uint8 pixels (with a processor made
with `uint8_pixels=True`) through shared memory, 4x less than float32, and run OpenCV single-threaded (one
worker per core is the parallelism; OpenCV's own thread pool in every worker would oversubscribe the cores).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import PIL.Image
import torch

from .examples import TokenizedExample, tokenize_example
from .mixture import Mixture
from .packing import Packer
from .processor import Processor

log = logging.getLogger(__name__)
# What a bad media file or row raises while being loaded (ArithmeticError: a number no check foresaw overflowing;
# RecursionError: nesting no parser foresaw); anything else is a bug and propagates.
SKIPPABLE_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    ArithmeticError,
    RecursionError,
    PIL.Image.DecompressionBombError,
)
# This many unusable items in a row mean the data is broken as a whole (a missing media folder, a wrong path):
# stop with the reason instead of skipping forever.
MAX_SKIPPED_IN_A_ROW = 1000
# The same when the unusable items are interleaved with good ones (every image of a mixture that also holds text):
# more than this fraction of the last SKIP_WINDOW items unusable stops the stream too.
SKIP_WINDOW = 1000
MAX_SKIPPED_FRACTION = 0.5


@dataclass
class Skipped:
    origin: tuple[int, int, int]
    source: str
    reason: str
    shard: int = 0


class ExampleSource(torch.utils.data.Dataset):
    """Item (position, dataset, row) of a mixture -> a TokenizedExample, or Skipped with the reason (a sampler
    may add the shard in front: (shard, position, dataset, row) -> the same, with `.shard` set). max_len: examples
    are truncated to it (examples.tokenize_example)."""

    def __init__(self, mixture: Mixture, processor: Processor, weighting: str = "none", max_len: int | None = None):
        self.mixture, self.processor, self.weighting, self.max_len = mixture, processor, weighting, max_len

    def __len__(self) -> int:  # the stream is endless; DataLoader only needs a number
        return 2**62

    def __getitem__(self, item: tuple[int, ...]) -> TokenizedExample | Skipped:
        shard, origin = (item[0], tuple(item[1:])) if len(item) == 4 else (0, tuple(item))
        result = self._load(origin)
        result.shard = shard
        return result

    def _load(self, origin: tuple[int, int, int]) -> TokenizedExample | Skipped:
        position, dataset, row = origin
        source = f"dataset {dataset} row {row}"
        data = self.mixture.datasets[dataset]
        try:
            if hasattr(data, "source"):  # file:line, also when the row fails to load
                source = data.source(row)
            if hasattr(data, "example"):  # a JsonlDataset: its random choices drawn for this position
                example = data.example(row, np.random.default_rng([self.mixture.seed, position]))
            else:
                example = data[row]
            source = example.source or source
            tokenized = tokenize_example(example, self.processor, self.weighting, self.max_len)
        except SKIPPABLE_ERRORS as e:
            return Skipped(origin, source, f"{type(e).__name__}: {e}")
        tokenized.origin = origin
        return tokenized


class _Origins(torch.utils.data.Sampler):
    """(shard, position, dataset, row) for the workers: first what each shard must fetch again, then the shards'
    positions in turn — shard s takes the mixture positions p with p % count == s, from its own start."""

    def __init__(self, mixture: Mixture, shards: list[int], count: int, states: dict[int, dict]) -> None:
        self.mixture, self.shards, self.count, self.states = mixture, shards, count, states

    def _positions(self, shard: int) -> Iterator[tuple[int, int, int]]:
        start = self.states[shard]["next_position"]
        return (origin for origin in self.mixture.stream(start) if origin[0] % self.count == shard)

    def __iter__(self):
        for shard in self.shards:
            yield from ((shard, *origin) for origin in self.states[shard]["pending"])
        streams = [self._positions(shard) for shard in self.shards]
        while True:
            for shard, positions in zip(self.shards, streams, strict=True):
                yield (shard, *next(positions))


# Streams with a background thread: stopped before the interpreter exits (a thread still inside a torch op
# while torch's own state is torn down aborts the process).
_LIVE_STREAMS: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [stream.close() for stream in list(_LIVE_STREAMS)])


def single_threaded_worker(worker_id: int) -> None:
    """DataLoader worker set-up: OpenCV (video decoding, resizing) on one thread."""
    cv2.setNumThreads(1)


class DataStream:
    """Endless packed batches from a mixture, a step at a time: each step is a list with one batch per shard.
    `state()` / `state=` resume it exactly.

    shards: this rank's shard indices; shard_count: all shards of a step (ranks x accumulation steps). Shard s
    uses only the mixture positions p with p % shard_count == s. The default, one shard of one, is the whole
    mixture in one stream (validation, tests).
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
        shards: list[int] | None = None,
        shard_count: int = 1,
        prefetch: int = 2,
    ) -> None:
        self.shards = list(shards or [0])
        fresh = {"next_position": 0, "pending": []}
        states = {s: {**fresh, **(state or {}).get(s, (state or {}).get(str(s), {}))} for s in self.shards}
        self.pin_memory = pin_memory  # page-locked batches copy to the GPU asynchronously
        self.prefetch = prefetch  # steps packed ahead by the background thread
        self.packers = {s: Packer(rows, seq_len) for s in self.shards}
        self.ready: dict[int, list[dict]] = {s: [] for s in self.shards}  # packed, not handed out yet
        self.unusable: Counter[str] = Counter()  # items the workers could not load, by reason
        self._next_position = {s: states[s]["next_position"] for s in self.shards}
        self._handed_out = (self._state(), Counter())  # state() and skipped as of the last step handed out
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        pending = {s: [tuple(p) for p in states[s]["pending"]] for s in self.shards}
        self._loader = torch.utils.data.DataLoader(
            ExampleSource(mixture, processor, weighting, max_len=seq_len),
            batch_size=None,
            sampler=_Origins(
                mixture, self.shards, shard_count, {s: {**states[s], "pending": pending[s]} for s in self.shards}
            ),
            num_workers=num_workers,
            collate_fn=lambda item: item,
            prefetch_factor=4 if num_workers else None,
            persistent_workers=num_workers > 0,
            worker_init_fn=single_threaded_worker,
        )

    @property
    def skipped(self) -> Counter[str]:
        """Items skipped up to the last step handed out, by reason: unusable ones, and those longer than
        `seq_len` (the packers')."""
        return Counter(self._handed_out[1])

    def state(self) -> dict:
        """Per shard, where to restart after the last step handed out: the examples then still waiting (in the
        packer or in batches packed ahead) are fetched again, then the stream goes on."""
        return {s: dict(v) for s, v in self._handed_out[0].items()}

    def _state(self) -> dict:
        state = {}
        for s in self.shards:
            waiting = [list(e.origin) for e in self.packers[s].pending]
            waiting = [list(o) for batch in self.ready[s] for o in batch["origins"]] + waiting
            state[s] = {"next_position": self._next_position[s], "pending": waiting}
        return state

    def close(self) -> None:
        """Stop the background threads (each finishes the item it is loading)."""
        for _, stop in self._threads:
            stop.set()
        for thread, _ in self._threads:
            thread.join(timeout=60)
        self._threads = []

    def __iter__(self) -> Iterator[list[dict]]:
        """Steps from the background thread; stopping the iteration (or `close()`) stops the thread."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._fill, args=(ready, stop), daemon=True, name="pack-and-pin")
        self._threads.append((thread, stop))
        _LIVE_STREAMS.add(self)
        thread.start()
        try:
            while True:
                step, handed_out = ready.get()
                if isinstance(step, BaseException):
                    raise step
                self._handed_out = handed_out
                yield step
        finally:
            stop.set()
            thread.join(timeout=60)
            if (thread, stop) in self._threads:
                self._threads.remove((thread, stop))

    def _fill(self, ready: queue.Queue, stop: threading.Event) -> None:
        """The background thread: pack, pin, queue each step with the stream's state just after it."""

        def put(item) -> bool:  # False once the consumer has stopped
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for step in self._steps(stop):
                skipped = self.unusable + Counter(
                    {"too long": sum(p.stats.skipped_too_long for p in self.packers.values())}
                )
                if self.pin_memory:
                    step = [{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in b.items()} for b in step]
                if not put((step, (self._state(), skipped))):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put((error, None))

    def _steps(self, stop: threading.Event) -> Iterator[list[dict]]:
        in_a_row = 0
        recent: deque[bool] = deque(maxlen=SKIP_WINDOW)  # the last items: True where unusable
        for item in self._loader:
            if stop.is_set():
                return
            shard = item.shard
            self._next_position[shard] = max(self._next_position[shard], item.origin[0] + 1)
            if isinstance(item, Skipped):
                self.unusable[item.reason.split(":")[0]] += 1
                log.warning("skipped %s: %s", item.source, item.reason)
                in_a_row += 1
                recent.append(True)
                if in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    raise RuntimeError(
                        f"{in_a_row} unusable data items in a row, the last {item.source}: {item.reason}"
                    )
                if len(recent) == SKIP_WINDOW and (unusable := sum(recent)) > MAX_SKIPPED_FRACTION * SKIP_WINDOW:
                    reasons = ", ".join(f"{reason} {n}" for reason, n in self.unusable.most_common(3))
                    raise RuntimeError(
                        f"{unusable} of the last {SKIP_WINDOW} data items were unusable (so far: {reasons}), "
                        f"the last {item.source}: {item.reason}"
                    )
                continue
            in_a_row = 0
            recent.append(False)
            batch = self.packers[shard].add(item)
            if batch is not None:
                self.ready[shard].append(batch)
            if all(self.ready.values()):
                yield [self.ready[s].pop(0) for s in self.shards]
