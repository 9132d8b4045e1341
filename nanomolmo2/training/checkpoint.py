"""Training checkpoints: written atomically, the last K kept, resumable exactly (also across world sizes).

A checkpoint is a folder `checkpoints/step_N/`:
    trainer.json       step, data-stream positions of every shard, RNG states, counters
    rng.pt             torch RNG states (loaded with weights_only=True)
    model.safetensors  + optimizer.pt        single process and DDP (rank 0 writes them)
    dcp/                                     FSDP2: torch.distributed.checkpoint shards of model + optimizer
Everything is written into a temporary sibling folder that is renamed to `step_N` only when complete, so a
crash during a save leaves the previous checkpoints untouched and never a half checkpoint. A checkpoint is
deleted (kept-last rotation, or replaced by a new save of its step) by renaming it away first, so a crash
mid-delete does not leave a half one either: a `step_N` folder is always whole. Hidden leftovers of a crash
(`.step_N.tmp`, `.step_N.old`) are cleared by the next save.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .distributed import DistributedEnv, barrier, broadcast_object

STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("step_*") if STEP_DIR.match(p.name) and (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder's latest complete checkpoint."""
    path = Path(path)
    if (path / "trainer.json").is_file():
        return path
    found = checkpoint_dirs(path)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected {path}/checkpoints/step_N/trainer.json)")
    return found[-1]


def rng_state() -> dict:
    """Python's and numpy's global RNG states as JSON-friendly data."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": numpy_state}


def _is_fsdp(model: nn.Module) -> bool:
    return any(type(m).__name__.startswith("FSDP") for m in model.modules())


def save_checkpoint(
    run_dir: Path, step: int, model: nn.Module, optimizer, trainer_state: dict, env: DistributedEnv, keep_last: int
) -> Path:
    run_dir = Path(run_dir)
    final = run_dir / "checkpoints" / f"step_{step}"
    tmp = run_dir / "checkpoints" / f".step_{step}.tmp"
    if env.is_main:
        for leftover in final.parent.glob(".step_*"):  # temp or trash folders of a crashed save
            shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    try:
        if _is_fsdp(model):
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp / "dcp"))
        elif env.is_main:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, tmp / "model.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if env.is_main:
            torch.save({"cpu": torch.get_rng_state(), "cuda": _cuda_rng()}, tmp / "rng.pt")
            state = dict(trainer_state, step=step, rng=rng_state())
            (tmp / "trainer.json").write_text(json.dumps(state))  # written last: marks the folder complete
        barrier()
        if env.is_main:
            if final.exists():
                _remove(final)
            tmp.rename(final)
            for old in checkpoint_dirs(run_dir)[:-keep_last] if keep_last > 0 else []:
                _remove(old)
    except BaseException:
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    return final


def _remove(folder: Path) -> None:
    """Delete a checkpoint: renamed to a hidden name first, so that dying mid-delete leaves no partial `step_N`."""
    trash = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _cuda_rng():
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def load_checkpoint(path: Path, model: nn.Module, optimizer, env: DistributedEnv) -> dict:
    """Restore model, optimizer and RNG states in place; return the trainer state (step, data positions...)."""
    path = Path(path)
    if (path / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        model.load_state_dict(load_file(path / "model.safetensors", device=str(env.device)))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=env.device, weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    trainer_state = broadcast_object(json.loads((path / "trainer.json").read_text()) if env.is_main else None)
    python_state = trainer_state["rng"]["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = trainer_state["rng"]["numpy"]
    numpy_state["state"]["key"] = np.array(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    return trainer_state
