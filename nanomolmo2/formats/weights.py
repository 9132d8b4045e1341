"""Reading and writing weight files: safetensors folders (sharded or not), strict loading, atomic saving.

Loading is strict: every parameter of the module must come from the file with the right shape, and every
key of the file must be used or explicitly ignored. Anything else fails with one error that lists all the
problems, so nothing is ever silently left at its random initialisation.

Reading takes a `keep(key)` filter: tensors are read one by one (`safe_open`), only those kept, and the shards of
an index that hold none of them are never opened (Molmo2's ViT from a 4B checkpoint reads the ViT, not the LLM).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .atomic import fsync_dir, fsync_tree, hold, sweep_stale

INDEX = "model.safetensors.index.json"
KeyFilter = Callable[[str], bool]  # a checkpoint key -> whether to read that tensor


class CheckpointError(ValueError):
    """A checkpoint does not match the model: missing, unexpected or mis-shaped keys, or a bad folder."""


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json (expected a Hugging Face model folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def index_map(index: Path) -> dict[str, str]:
    """A `model.safetensors.index.json`'s key -> shard file, the shards plain file names inside its folder."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index ({type(e).__name__}: {e})") from None
    for name in names:
        # A shard is a file of this folder: an absolute name or a "../" would load some other file.
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{index}: shard name {name!r} is not a file name inside {index.parent}")
    return weight_map


def shard_names(index: Path) -> list[str]:
    """The shard files a `model.safetensors.index.json` lists, or an error."""
    return sorted(set(index_map(index).values()))


def weight_files(folder: Path, keep: KeyFilter | None = None) -> list[str]:
    """Names of the safetensors files to read: the shards of the index that hold a tensor `keep` wants (all of them
    without `keep`), else model.safetensors, else every *.safetensors of the folder."""
    index = folder / INDEX
    if index.is_file():
        return sorted({name for key, name in index_map(index).items() if keep is None or keep(key)})
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    return sorted(path.name for path in folder.glob("*.safetensors"))


def read_safetensors(file: Path, keep: KeyFilter | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file that `keep` wants, each read on its own (the others never are)."""
    if not file.is_file():
        raise CheckpointError(f"{file.parent}: shard {file.name} listed in the index is missing")
    try:
        with safe_open(file, framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys() if keep is None or keep(key)}
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{file}: cannot read safetensors file ({e})") from e


def read_weights(
    folder: Path, keep: KeyFilter | None = None, files: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a folder that `keep` wants (all without it): model.safetensors, a sharded index, or (trusted
    folders only) pytorch_model.bin. `files`: the weight files when the caller has listed them already."""
    files = weight_files(folder, keep) if files is None else files
    if files or (folder / INDEX).is_file():
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(read_safetensors(folder / name, keep))
        return state
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        # weights_only: never unpickle arbitrary objects from a checkpoint.
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        return {key: value for key, value in state.items() if keep is None or keep(key)}
    raise CheckpointError(f"{folder}: no *.safetensors or pytorch_model.bin weights found")


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module`; raise one CheckpointError listing every missing/unexpected/mis-shaped key."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            problems.append(f"{len(items)} {title} key(s):\n  " + "\n  ".join(items))
    if problems:
        raise CheckpointError(f"{source} does not match the model:\n" + "\n".join(problems))
    module.load_state_dict(state, strict=True)


def subtree(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed (the state of one sub-module)."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def write_folder_atomically(folder: Path, files: dict[str, str | dict | dict[str, torch.Tensor]]) -> None:
    """Write `{name: text | json dict | tensor dict}` into `folder` so that a crash never leaves a half-written folder.

    Everything goes to a temporary sibling folder first, which then replaces `folder` by renames.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{folder.name}.tmp-*", f".{folder.name}.old-*"):  # what a killed writer left behind
        sweep_stale(folder.parent, pattern)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    lock = hold(tmp)  # ours while we write: another writer's sweep leaves it alone
    try:
        for name, content in files.items():
            if isinstance(content, str):  # a text file as it is (tokenizer.json, chat_template.jinja)
                (tmp / name).write_text(content)
            elif name.endswith(".json"):
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                save_file(
                    {k: v.detach().contiguous().cpu() for k, v in content.items()},
                    tmp / name,
                    {"format": "pt"},
                )
        fsync_tree(tmp)  # the files are on disk before any name points at them
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        fsync_dir(folder.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
