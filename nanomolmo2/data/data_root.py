"""A data folder and the datasets in it, by name: what a training config's `mixture` points at.

A data folder (`--data`) holds one JSONL file per dataset, as `scripts/download_all.sh` / `nanomolmo2 prepare`
write them (`DATA/pixmo-cap.jsonl`, `DATA/pixmo-points.jsonl`, ..., media under `DATA/media/`), or a folder per
dataset (`DATA/pixmo-cap/*.jsonl`). ShapesWorld writes `images.jsonl`, `videos.jsonl` and `text.jsonl`.

A mixture is a list of groups `[rate, [entry, ...]]`; an entry names one dataset:

    "pixmo-cap"                                   every annotation of DATA/pixmo-cap.jsonl (or DATA/pixmo-cap/)
    "images:caption"                              only its caption annotations ("images:pointing,counting", ...)
    {name = "pixmo-cap", size = 100000}           Molmo2's overrides: a size standing in for its own, a
    {name = "vixmo-points", size = 0, rate = 0.4}   sampling rate (mixture.Weighted)
    "caption" | "pointing" | "vqa" | "text" | "video"   a kind of annotation over every file of the folder

Inside a group datasets are sampled in proportion to the square root of their size (mixture.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .datasets import CaptioningDataset, JsonlDataset, PointingDataset, TextDataset, VideoDataset, VQADataset
from .mixture import Mixture, Weighted

log = logging.getLogger(__name__)
# Kinds of annotation over every file of a folder (before datasets had names): each is a dataset preset.
KINDS = {
    "caption": CaptioningDataset,
    "pointing": PointingDataset,
    "vqa": VQADataset,
    "text": TextDataset,
    "video": VideoDataset,
}


@dataclass(frozen=True)
class Entry:
    """One dataset of a mixture group (the module docstring has the forms a config writes)."""

    name: str
    tasks: tuple[str, ...] = ()  # () = every task the dataset has
    size: float | None = None
    rate: float = 1.0

    @classmethod
    def parse(cls, value: str | dict) -> Entry:
        if isinstance(value, str):
            name, _, tasks = value.partition(":")
            return cls(name.strip(), tuple(t.strip() for t in tasks.split(",") if t.strip()))
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            unknown = set(value) - {"name", "tasks", "size", "rate"}
            if unknown:
                raise ValueError(f"mixture entry {value}: unknown keys {sorted(unknown)} (name, tasks, size, rate)")
            return cls(value["name"], tuple(value.get("tasks", ())), value.get("size"), float(value.get("rate", 1.0)))
        raise ValueError(f"mixture entry {value!r}: a dataset name, 'name:task,task', or a table with a name")


def parse_mixture(mixture: list) -> list[tuple[float, list[Entry]]]:
    """A config's mixture -> (rate, entries) groups; a malformed one is a ValueError that says what is wrong."""
    groups = []
    for group in mixture:
        if not (isinstance(group, list | tuple) and len(group) == 2 and isinstance(group[1], list | tuple)):
            raise ValueError(f"mixture group {group!r}: expected [rate, [dataset, ...]]")
        rate = float(group[0])
        if rate < 0:
            raise ValueError(f"mixture group {group!r}: the rate must not be negative")
        groups.append((rate, [Entry.parse(entry) for entry in group[1]]))
    return groups


def dataset_files(folder: Path) -> dict[str, Path]:
    """Every dataset of a data folder by name: its JSONL files, and its sub-folders that hold JSONL files."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no data folder {folder}")
    found = {p.stem: p for p in sorted(folder.glob("*.jsonl"))}
    found.update({p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and any(p.glob("*.jsonl"))})
    return found


def open_dataset(folder: Path, entry: Entry, **options) -> JsonlDataset:
    """The dataset an entry names. options: max_conversations, max_fps, max_frames, frame_size."""
    available = dataset_files(folder)
    if entry.name in available:
        return JsonlDataset(available[entry.name], tasks=entry.tasks or None, **options)
    if entry.name in KINDS and not entry.tasks:
        kind = KINDS[entry.name]
        if kind is not VideoDataset:  # image presets have no video options
            options = {"max_conversations": options.get("max_conversations", 8)}
        return kind(folder, **options)
    names = ", ".join(sorted(available)) or "none"
    raise FileNotFoundError(f"no dataset {entry.name!r} in {folder} (datasets there: {names})")


def build_mixture(folder: str | Path, mixture: list, seed: int, **options) -> Mixture:
    """The Mixture of a config's groups over a data folder; empty datasets are left out with a warning."""
    groups = []
    for rate, entries in parse_mixture(mixture):
        datasets = []
        for entry in entries:
            dataset = open_dataset(Path(folder), entry, **options)
            dataset.name = entry.name + (":" + ",".join(entry.tasks) if entry.tasks else "")
            if len(dataset):
                datasets.append(Weighted(dataset, entry.size, entry.rate))
            else:
                log.warning("no rows for %s in %s: left out of the mixture", dataset.name, folder)
        if datasets:
            groups.append((rate, datasets))
    if not groups:
        raise FileNotFoundError(f"none of the mixture's datasets has rows in {folder}")
    return Mixture(groups, seed=seed)
