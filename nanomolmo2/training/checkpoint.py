"""Training checkpoints: written atomically, the last K kept, resumable exactly (also across world sizes).

A checkpoint is a folder `checkpoints/step_N/`:
    trainer.json       step, data-stream positions of every shard, RNG states, counters
    rng.pt             torch RNG states of rank 0: CPU and its own GPU (loaded with weights_only=True);
                       rank r > 0 writes rng_rank{r}.pt, so each device gets its own back, on any machine
    model.safetensors  + optimizer.pt        single process and DDP (rank 0 writes them; keys without DDP's
                                             `module.`, so a single process resumes them)
    dcp/                                     FSDP2: torch.distributed.checkpoint shards of model + optimizer
Everything is written into a temporary sibling folder, fsynced, and renamed to `step_N` only when complete (the
folder is fsynced after the rename), so neither a crash nor a power loss during a save leaves a half checkpoint,
and older checkpoints are rotated away only once the new one is on disk. A checkpoint is deleted (kept-last
rotation, or replaced by a new save of its step) by renaming it away first, so a crash mid-delete does not leave
a half one either: a `step_N` folder is always whole. Hidden leftovers of a crash (`.step_N.tmp`, `.step_N.old`)
are cleared by the next save (the run folder's lock, run_folder.py, makes them this run's own).

Rotation deletes only the checkpoints the caller says are its own (`rotate`), never the one just written.
Loading names the file that cannot be read (CheckpointError); `resume_checkpoint` on a run folder then falls
back to the previous complete checkpoint, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..formats.atomic import fsync_dir, fsync_tree
from ..formats.weights import CheckpointError
from .distributed import DistributedEnv, all_gather_objects, barrier, unwrap

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")


def step_of(folder: Path) -> int:
    return int(STEP_DIR.match(folder.name).group(1))


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("step_*") if STEP_DIR.match(p.name) and (p / "trainer.json").is_file()]
    return sorted(found, key=step_of)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder's latest complete checkpoint."""
    path = Path(path)
    if (path / "trainer.json").is_file():
        return path
    found = checkpoint_dirs(path)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected {path}/checkpoints/step_N/trainer.json)")
    return found[-1]


def run_folder_of(path: str | Path) -> Path:
    """The run folder of a checkpoint folder (`RUN/checkpoints/step_N`), or `path` itself when it is a run folder."""
    path = Path(path)
    if (path / "trainer.json").is_file() and path.parent.name == "checkpoints":
        return path.parent.parent
    return path


def peek_trainer_state(path: str | Path) -> dict | None:
    """The trainer.json of the checkpoint a resume from `path` would try first, or None if it cannot be read (a
    cheap look before anything is built; the real load checks again)."""
    try:
        return json.loads((resolve_checkpoint(path) / "trainer.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None


def rng_state() -> dict:
    """Python's and numpy's global RNG states as JSON-friendly data."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": numpy_state}


def _is_fsdp(model: nn.Module) -> bool:
    return any(type(m).__name__.startswith("FSDP") for m in model.modules())


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer,
    trainer_state: dict,
    env: DistributedEnv,
    keep_last: int,
    rotate: Callable[[int], bool] | None = None,
) -> Path:
    """Write `checkpoints/step_{step}` whole, then keep the newest `keep_last` of the checkpoints that `rotate(step)`
    says are this run's (all when None); the one just written is always kept: the path returned exists."""
    run_dir = Path(run_dir)
    final = run_dir / "checkpoints" / f"step_{step}"
    tmp = run_dir / "checkpoints" / f".step_{step}.tmp"
    if env.is_main:
        clear_leftovers(run_dir)
        tmp.mkdir(parents=True)
    barrier()
    try:
        if _is_fsdp(model):
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp / "dcp"))
        elif env.is_main:
            state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
            save_file(state, tmp / "model.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"cpu": torch.get_rng_state(), "cuda": _cuda_rng()}, tmp / _rng_file(env.rank))  # every rank
        if env.is_main:
            state = dict(trainer_state, step=step, rng=rng_state())
            _write_json(tmp / "trainer.json", state)  # written last: marks the folder complete
        barrier()
        if env.is_main:
            fsync_tree(tmp)  # every file on disk before the name says the checkpoint is complete
            if final.exists():
                _remove(final)
            tmp.rename(final)
            fsync_dir(final.parent)  # the rename too, before any older checkpoint goes
            ours = [p for p in checkpoint_dirs(run_dir) if p == final or rotate is None or rotate(step_of(p))]
            for old in ours[:-keep_last] if keep_last > 0 else []:
                if old != final:
                    _remove(old)
    except BaseException:
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    return final


def clear_leftovers(run_dir: Path) -> None:
    """Delete the temp and trash folders of a crashed save (`.step_N.tmp`, `.step_N.old`). Only the holder of the
    run folder (run_folder.py) may: another run's would be a save in progress."""
    for leftover in (Path(run_dir) / "checkpoints").glob(".step_*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def _remove(folder: Path) -> None:
    """Delete a checkpoint: renamed to a hidden name first, so that dying mid-delete leaves no partial `step_N`."""
    trash = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _cuda_rng() -> torch.Tensor | None:
    """This process's GPU's RNG state (not every visible GPU's: a machine with fewer could not take them all)."""
    return torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def _rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng_rank{rank}.pt"


@contextlib.contextmanager
def _reading(file: Path):
    """Any error while reading or applying `file` becomes a CheckpointError that names it."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # safetensors, pickle, torch, json: each has its own error types for a bad file
        if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
            # torch's message advises weights_only=False, which would run code from the file: never do that.
            reason = "not a file of plain tensors (corrupt, or it holds pickled objects, which are never loaded)"
        else:
            reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{file}: cannot be loaded ({type(e).__name__}: {reason})") from None


def load_checkpoint(path: Path, model: nn.Module, optimizer, env: DistributedEnv) -> dict:
    """Restore model, optimizer and RNG states in place; return the trainer state (step, data positions...).
    A file that cannot be read raises CheckpointError naming it."""
    path = Path(path)
    with _reading(path / "trainer.json"):
        trainer_state = json.loads((path / "trainer.json").read_text())
        python_state, numpy_state = trainer_state["rng"]["python"], trainer_state["rng"]["numpy"]
        if not isinstance(trainer_state["step"], int):
            raise ValueError(f"step {trainer_state['step']!r} is not a whole number")
    if (path / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        with _reading(path / "dcp"):
            model_state, optim_state = get_state_dict(model, optimizer)
            state = {"model": model_state, "optimizer": optim_state}
            dcp.load(state, checkpoint_id=str(path / "dcp"))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        with _reading(path / "model.safetensors"):
            weights = load_file(path / "model.safetensors", device=str(env.device))
            unwrap(model).load_state_dict({k.removeprefix("module."): v for k, v in weights.items()})
        with _reading(path / "optimizer.pt"):
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=env.device, weights_only=True))
    rng_file = path / _rng_file(env.rank)
    rng_file = rng_file if rng_file.is_file() else path / "rng.pt"  # more ranks than the run that saved: rank 0's
    with _reading(rng_file):
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        cuda = rng["cuda"]
        if isinstance(cuda, list):  # older checkpoints: rank 0's list of every GPU's state
            cuda = cuda[env.local_rank] if env.local_rank < len(cuda) else None
        if cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda)  # the current device's only
    with _reading(path / "trainer.json"):
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
        numpy_state["state"]["key"] = np.array(numpy_state["state"]["key"], dtype=np.uint32)
        np.random.set_state(numpy_state)
    return trainer_state


def resume_checkpoint(path: str | Path, model: nn.Module, optimizer, env: DistributedEnv) -> tuple[Path, dict]:
    """Load a checkpoint folder, or the newest complete checkpoint of a run folder that loads: a corrupt one is
    reported (a warning naming the file) and the previous one tried. Returns (checkpoint folder, trainer state)."""
    path = Path(path)
    candidates = [path] if (path / "trainer.json").is_file() else checkpoint_dirs(path)[::-1]
    if not candidates:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected {path}/checkpoints/step_N/trainer.json)")
    problems = []
    for candidate in candidates:
        try:
            state, error = load_checkpoint(candidate, model, optimizer, env), None
        except CheckpointError as e:
            state, error = None, str(e)
        errors = [e for e in all_gather_objects(error) if e]  # every rank resumes from the same one
        if not errors:
            return candidate, state
        problems.append(errors[0])
        if candidate is not candidates[-1]:
            log.warning(
                "cannot resume from %s: %s; falling back to the previous complete checkpoint", candidate, errors[0]
            )
    raise CheckpointError(f"no checkpoint of {path} can be loaded:\n  " + "\n  ".join(problems))
