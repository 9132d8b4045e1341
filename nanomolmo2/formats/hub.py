"""Checkpoints by name: a local folder, or a Hugging Face Hub model id (`Qwen/Qwen3-0.6B`, `allenai/Molmo2-4B`).

A name that is an existing folder is used as it is. Any other name is a Hub repo id, fetched through
`huggingface_hub.snapshot_download` into its cache (or found there): it honours HF_HUB_OFFLINE=1, HF_HOME and
HF_HUB_CACHE, and a model downloaded once (`hf download ID`) loads offline. Only what loading needs is fetched: the
config, the tokenizer files and, of the weights, only the files holding the tensors asked for, so that Molmo2's ViT
taken from a sharded 4B checkpoint downloads (and reads) the shards of the ViT, not the LLM's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .weights import INDEX, CheckpointError, KeyFilter, read_config, read_weights, weight_files

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]
METADATA_FILES = ["config.json", INDEX, *TOKENIZER_FILES]  # small files: everything but the weights


def resolve_folder(name_or_path: str | Path, allow_patterns: list[str] | None = None) -> Path:
    """An existing folder as it is; otherwise the snapshot folder of the Hub model `name_or_path`, with the files
    matching `allow_patterns` (all when None) fetched into the Hugging Face cache if they are not there yet."""
    folder = Path(name_or_path)
    if folder.is_dir():
        return folder
    name = str(name_or_path)
    try:
        from huggingface_hub import snapshot_download  # only for Hub ids: local folders never need it
    except ImportError:
        raise CheckpointError(f"no folder {name} (Hub ids need the huggingface_hub package)") from None
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=allow_patterns))
    except Exception as e:  # not an id, offline and not cached, no such repo, no network: one line for all
        raise CheckpointError(f"no folder {name} and no cached Hub model {name}: {_why(e, name)}") from None


def _why(error: Exception, name: str) -> str:
    """huggingface_hub's error, in a few words (its messages run over several lines)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(error, HFValidationError):
        return "not a Hub id (org/name) either"
    if isinstance(error, RepositoryNotFoundError):
        return "the Hub has no such model (or it is private or gated: `hf auth login`)"
    if isinstance(error, LocalEntryNotFoundError):
        cause = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        return f"{cause} and the cache {constants.HF_HUB_CACHE} does not hold it (`hf download {name}`)"
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def read_checkpoint(
    name_or_path: str | Path, keep: Callable[[dict], KeyFilter | None] | None = None
) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """The folder, config.json and weights of a checkpoint (a folder or a Hub id).

    keep: config.json -> which tensors are needed (None: all). Only those are read, and on the Hub only the weight
    files holding them are downloaded.
    """
    folder = resolve_folder(name_or_path, METADATA_FILES)
    config = read_config(folder)
    wanted = keep(config) if keep is not None else None
    files = weight_files(folder, wanted)
    if not Path(name_or_path).is_dir():  # a Hub snapshot: fetch the weight files (safetensors only, never pickles)
        indexed = (folder / INDEX).is_file()  # then `files` are the shards holding wanted tensors
        folder = resolve_folder(name_or_path, METADATA_FILES + (files if indexed else ["*.safetensors"]))
        files = files if indexed else weight_files(folder, wanted)
    return folder, config, read_weights(folder, wanted, files)
