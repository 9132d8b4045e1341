"""A data folder and the datasets in it, by name: what a training config's `mixture` points at.

A data folder (`--data`) holds one JSONL file per dataset, as `scripts/download_all.sh` / `nanomolmo2 prepare`
write them (`DATA/pixmo-cap.jsonl`, `DATA/pixmo-points.jsonl`, ..., media under `DATA/media/`), or a folder per
dataset (`DATA/pixmo-cap/*.jsonl`). ShapesWorld writes `images.jsonl`, `videos.jsonl` and `text.jsonl`.

A mixture is a list of groups `[rate, [entry, ...]]`; an entry names one dataset:

    "pixmo-cap"                                   every annotation of DATA/pixmo-cap.jsonl (or DATA/pixmo-cap/)
    "images:caption"                              only its caption annotations ("images:pointing,counting", ...)
    {name = "pixmo-cap", size = 100000}           Molmo2's overrides: a size standing in for its own, a
    {name = "vixmo-points", size = 0, rate = 0.4}   sampling rate (mixture.Weighted)
    {name = "ChartQA", optional = true}           left out, with a one-line notice, when the folder lacks it
    {name = "pixmo-points", max_points = 60,      Molmo2's per-dataset data rules (datasets.py): examples of at
     both_point_styles = true, p_high_res = 0.3}    most 60 points, each as point_count and as pointing, up to 24
    {name = "pixmo-cap", transcripts = true}        crops with p = 0.3; a caption with one of its transcripts
    {name = "Molmo2-VideoPoint",                  Molmo2-VideoPoint's rules (video_point_rules.py): times from
     clip_times = true, video_point_styles = true}  the clip start; each query as video_point_count or video_point
    "caption" | "pointing" | "vqa" | "text" | "video"   a kind of annotation over every file of the folder

Inside a group datasets are sampled in proportion to the square root of their size (mixture.py). A dataset that is
not optional must be in the folder: its absence is an error naming the datasets that are there. Optional entries
let one config list what Molmo2 trains on (e.g. stage 2's academic sets) while a data folder holds only part of it;
a group whose datasets are all absent is left out, and the rates of the others are normalised over what remains.
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

# Molmo2's per-dataset data rules a mixture entry may set (options of datasets.JsonlDataset): what each accepts.
RULES = {
    "max_points": ("a whole number >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "both_point_styles": ("true or false", lambda v: isinstance(v, bool)),
    "transcripts": ("true or false", lambda v: isinstance(v, bool)),
    "clip_times": ("true or false", lambda v: isinstance(v, bool)),
    "video_point_styles": ("true or false", lambda v: isinstance(v, bool)),
    "p_high_res": (
        "a number from 0 to 1",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1,
    ),
}


@dataclass(frozen=True)
class Entry:
    """One dataset of a mixture group (the module docstring has the forms a config writes)."""

    name: str
    tasks: tuple[str, ...] = ()  # () = every task the dataset has
    size: float | None = None
    rate: float = 1.0
    optional: bool = False  # absent from the data folder: left out with a notice instead of an error
    rules: tuple[tuple[str, object], ...] = ()  # (option, value) pairs of RULES for the dataset (datasets.py)

    @classmethod
    def parse(cls, value: str | dict) -> Entry:
        if isinstance(value, str):
            name, _, tasks = value.partition(":")
            return cls(name.strip(), tuple(t.strip() for t in tasks.split(",") if t.strip()))
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            unknown = set(value) - {"name", "tasks", "size", "rate", "optional", *RULES}
            if unknown:
                known = ", ".join(["name", "tasks", "size", "rate", "optional", *RULES])
                raise ValueError(f"mixture entry {value}: unknown keys {sorted(unknown)} ({known})")
            rules = tuple((key, value[key]) for key in RULES if key in value)
            for key, setting in rules:
                if not RULES[key][1](setting):
                    raise ValueError(f"mixture entry {value}: {key} must be {RULES[key][0]}")
            optional = value.get("optional", False)
            if not isinstance(optional, bool):
                raise ValueError(f"mixture entry {value}: optional must be true or false")
            tasks, size, rate = tuple(value.get("tasks", ())), value.get("size"), float(value.get("rate", 1.0))
            return cls(value["name"], tasks, size, rate, optional, rules)
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


def is_present(folder: Path, entry: Entry) -> bool:
    """Does the folder hold the dataset the entry names (or is the name a kind of annotation over every file)?"""
    return entry.name in dataset_files(folder) or (entry.name in KINDS and not entry.tasks)


def open_dataset(folder: Path, entry: Entry, **options) -> JsonlDataset:
    """The dataset an entry names, with the entry's rules. options: max_conversations, max_fps, max_frames,
    frame_size."""
    available = dataset_files(folder)
    if entry.name in available:
        return JsonlDataset(available[entry.name], tasks=entry.tasks or None, **options, **dict(entry.rules))
    if entry.name in KINDS and not entry.tasks:
        return KINDS[entry.name](folder, **options, **dict(entry.rules))
    names = ", ".join(sorted(available)) or "none"
    raise FileNotFoundError(f"no dataset {entry.name!r} in {folder} (datasets there: {names})")


def build_mixture(folder: str | Path, mixture: list, seed: int, **options) -> Mixture:
    """The Mixture of a config's groups over a data folder; empty datasets, and optional ones the folder lacks, are
    left out with a warning; a required one the folder lacks is a FileNotFoundError (a one-line user error)."""
    groups = []
    for rate, entries in parse_mixture(mixture):
        datasets = []
        for entry in entries:
            if entry.optional and not is_present(Path(folder), entry):
                log.warning("optional dataset %s is not in %s: left out of the mixture", entry.name, folder)
                continue
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
