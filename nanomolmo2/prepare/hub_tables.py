"""A dataset's tables from the Hugging Face Hub, through huggingface_hub's cache (offline with HF_HUB_OFFLINE=1).

`nanomolmo2 prepare allenai/pixmo-cap --out DATA` without `--from` fetches the train split's parquet files (and,
for Molmo2-VideoPoint, its id -> URL table and its generated videos) into the cache and reads them from there;
a second run, or a machine with the cache filled, fetches nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UsageError

TRAIN_TABLES = ["*train-*.parquet"]
PATTERNS = {  # what to fetch besides the train tables: everything else of a dataset repo is left on the Hub
    "Molmo2-VideoPoint": ["data/train-*.parquet", "youtube_id_to_urls_mapping.json", "generated_videos/*"],
}


def fetch_snapshot(repo_id: str, name: str) -> Path:
    """The local snapshot folder of the dataset repo, with the files `prepare` needs."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, repo_type="dataset", allow_patterns=PATTERNS.get(name, TRAIN_TABLES))
    except Exception as e:  # network, authentication, offline without a cached copy: all say the same to a user
        raise UsageError(
            f"cannot get the tables of {repo_id} from the Hugging Face Hub ({type(e).__name__}: {e}); "
            "download them yourself and pass the folder with --from"
        ) from None
    return Path(folder)


def train_tables(snapshot: Path, repo_id: str) -> Path:
    """The one folder of the snapshot that holds the train split's parquet files."""
    folders = sorted({p.parent for p in snapshot.rglob("*train-*.parquet")})
    if len(folders) != 1:
        found = ", ".join(str(f.relative_to(snapshot)) for f in folders) or "none"
        raise UsageError(f"expected the train tables of {repo_id} in one folder, found: {found}")
    return folders[0]


def copy_into(source: Path, target: Path) -> Path:
    """Copy the files of `source` that `target` lacks (media must sit inside the dataset folder: SECURITY.md)."""
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.rglob("*")):
        destination = target / file.relative_to(source)
        if file.is_file() and not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, destination)
    return target
