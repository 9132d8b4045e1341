"""Reading and writing weight files: safetensors folders (sharded or not), strict loading, atomic saving.

Loading is strict: every parameter of the module must come from the file with the right shape, and every
key of the file must be used or explicitly ignored. Anything else fails with one error that lists all the
problems, so nothing is ever silently left at its random initialisation.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


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


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: model.safetensors, a sharded index, or (trusted folders only) pytorch_model.bin."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / name for name in shards]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for file in files:
            if not file.is_file():
                raise CheckpointError(f"{folder}: shard {file.name} listed in the index is missing")
            try:
                state.update(load_file(file))
            except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
                raise CheckpointError(f"{file}: cannot read safetensors file ({e})") from e
        return state
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        # weights_only: never unpickle arbitrary objects from a checkpoint.
        return torch.load(bin_file, map_location="cpu", weights_only=True)
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


def write_folder_atomically(folder: Path, files: dict[str, dict | dict[str, torch.Tensor]]) -> None:
    """Write `{name: json dict | tensor dict}` into `folder` so that a crash never leaves a half-written folder.

    Everything goes to a temporary sibling folder first, which then replaces `folder` by renames.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, content in files.items():
            if name.endswith(".json"):
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                save_file(
                    {k: v.detach().contiguous().cpu() for k, v in content.items()},
                    tmp / name,
                    {"format": "pt"},
                )
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
