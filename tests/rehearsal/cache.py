"""The Hugging Face cache of the rehearsal: the two checkpoints and the dataset repos, as `hf download` leaves them.

- `Qwen/Qwen3-0.6B` and `allenai/Molmo2-4B`: tiny random checkpoints saved by transformers in the released layouts
  (tests/formats/hub_cache.py), so that the training command names them by Hub id, offline.
- `allenai/<dataset>` dataset repos: a README.md card and the table as `data/train-00000-of-00001.parquet` (the
  layout of the PixMo and Molmo2 repos), Molmo2-VideoPoint with its `generated_videos/` folder, for `nanomolmo2
  prepare` to fetch through `snapshot_download(repo_type="dataset")`. A dataset repo sits in the cache as
  `datasets--ORG--NAME`, laid out like a model repo (`models--ORG--NAME`): the same blobs, snapshots and refs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.formats.hub_cache import add_to_hub_cache, sharded_molmo2_folder, tiny_qwen3_folder
from tests.models.reference import tiny_molmo2_config

QWEN3, MOLMO2 = "Qwen/Qwen3-0.6B", "allenai/Molmo2-4B"
# 140-px crops (10 patches): Molmo2's 4 + 4 patch overlap margins leave 2 patches per step between crops, so the
# released image layout (a global crop and overlapping crops) applies unchanged, as on the real 378-px encoder.
CROP = 140
TRAIN_TABLE = "data/train-00000-of-00001.parquet"


def add_checkpoints(cache: Path, work: Path) -> None:
    tiny_qwen3_folder(work / "qwen3", seed=0)
    sharded_molmo2_folder(work / "molmo2", seed=0, config=tiny_molmo2_config(image_size=CROP))
    add_to_hub_cache(cache, QWEN3, work / "qwen3")
    add_to_hub_cache(cache, MOLMO2, work / "molmo2")


def write_tables(tables: dict, folder: Path) -> dict[str, Path]:
    """Each table as `folder/<name>/data/train-00000-of-00001.parquet` (plus generated videos); {name: its folder}."""
    written = {}
    for name, value in tables.items():
        if name.endswith("/generated_videos"):
            continue
        rows, schema = value
        repo = folder / name
        (repo / TRAIN_TABLE).parent.mkdir(parents=True, exist_ok=True)
        (repo / "README.md").write_text(f"# {name}\n\nA rehearsal table in the column layout of allenai/{name}.\n")
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), repo / TRAIN_TABLE)
        for file_name, body in tables.get(f"{name}/generated_videos", {}).items():
            (repo / "generated_videos").mkdir(exist_ok=True)
            (repo / "generated_videos" / file_name).write_bytes(body)
        written[name] = repo
    return written


def add_dataset_repos(cache: Path, repos: dict[str, Path], org: str = "allenai") -> None:
    """The repo folders as the cached snapshots of the dataset repos `org/<name>`."""
    for name, folder in repos.items():
        add_to_hub_cache(cache, f"{org}/{name}", folder)
        model_dir = cache / f"models--{org}--{name}"
        model_dir.rename(cache / f"datasets--{org}--{name}")  # the snapshot's links are relative: they still hold
