"""Crashes during training (nanomolmo2/training/checkpoint.py, trainer.py): a tiny run killed with SIGKILL at chosen
points, inside steps and inside checkpoint saves (after each file, before the rename, during the rotation), resumes
from its last complete checkpoint and ends with the same weights and the same log (no step twice) as a run that was
never interrupted; a half-written or half-deleted checkpoint folder is never resumed from. (A full disk during a
save: test_trainer.py.)

No timing decides anything: the runner (fault_runner.py) prints "at POINT" when it reaches the chosen point and
blocks there until the test kills it, and every kill is checked to have happened (exit status -SIGKILL)."""

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nanomolmo2.training import checkpoint as checkpoint_module
from nanomolmo2.training.checkpoint import (
    checkpoint_dirs,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    step_of,
)
from nanomolmo2.training.distributed import DistributedEnv
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config
from .fault_runner import RUN

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT_FILES = ["model.safetensors", "optimizer.pt", "rng.pt", "trainer.json"]  # in the order a save writes them


def kill_points(seed: int) -> list[tuple[str, int]]:
    """(where to kill, the step of the latest complete checkpoint afterwards), in launch order; the file after which
    a save is killed is a seeded choice. Before step 2's checkpoint there is none, and each restart starts fresh."""
    rng = random.Random(seed)
    return [
        ("step:2", 0),
        (f"save:2:{rng.choice(CHECKPOINT_FILES)}", 0),
        ("rename:2", 0),
        ("step:3", 2),
        (f"save:4:{rng.choice(CHECKPOINT_FILES)}", 2),
        ("rename:4", 2),
        ("rotate:6", 6),  # finish() saves step 6; keeping 2, step 2 is being deleted when the kill lands
    ]


def launch(data: Path, out: Path, point: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.training.fault_runner", str(data), str(out), point]
    with open(log, "a") as stderr:
        process = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    watchdog = threading.Timer(300, process.kill)  # only a safety net: a hung run fails instead of blocking
    watchdog.daemon = True
    watchdog.start()
    return process


def read_until(process: subprocess.Popen, wanted: str) -> list[str]:
    """The lines the run prints, up to the first one that starts with `wanted`."""
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if lines[-1].startswith(wanted):
            return lines
    raise AssertionError(f"the run ended (exit {process.wait()}) before printing {wanted!r}: {lines}")


def latest_step(out: Path) -> int:
    found = checkpoint_dirs(out)
    return step_of(found[-1]) if found else 0


def assert_step_folders_complete(out: Path) -> None:
    """Every `step_N` folder holds a whole checkpoint (temp and trash folders are hidden names)."""
    for folder in (out / "checkpoints").glob("step_*"):
        assert sorted(p.name for p in folder.iterdir()) == sorted(CHECKPOINT_FILES), folder


def logged_steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(shapes_data, tmp_path):
    straight = Trainer(tiny_config(shapes_data, tmp_path / "straight", **RUN))
    straight.train()
    straight.close()

    out, log = tmp_path / "killed", tmp_path / "stderr.txt"
    for point, latest_after in kill_points(seed=0):
        start = latest_step(out)
        process = launch(shapes_data, out, point, log)
        lines = read_until(process, f"at {point}")
        assert lines[0] == f"start {start}"  # resumed from the latest complete checkpoint (or fresh)
        process.kill()
        process.communicate()
        assert process.returncode == -signal.SIGKILL, log.read_text()[-2000:]  # killed there, not finished
        assert_step_folders_complete(out)
        assert latest_step(out) == latest_after, point
        kind, step, *file = point.split(":")
        if kind in ("save", "rename"):  # half a checkpoint (or a whole one not yet renamed): never resumed from
            temp = out / "checkpoints" / f".step_{step}.tmp"
            written = CHECKPOINT_FILES[: CHECKPOINT_FILES.index(file[0]) + 1] if file else CHECKPOINT_FILES
            assert sorted(p.name for p in temp.iterdir()) == sorted(written)
        if kind == "rotate":  # the old one was renamed away whole, and is not a checkpoint any more
            assert (out / "checkpoints" / ".step_2.old").is_dir() and not (out / "checkpoints" / "step_2").exists()

    start = latest_step(out)
    process = launch(shapes_data, out, "never", log)
    lines = process.communicate(input="", timeout=300)[0].splitlines()
    assert process.returncode == 0, log.read_text()[-2000:]
    assert lines[0] == f"start {start}" and lines[-1] == "done"
    assert_step_folders_complete(out)
    assert [p.name for p in checkpoint_dirs(out)] == ["step_4", "step_6"]
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # leftovers cleared
    for name in ("checkpoints/step_6/model.safetensors", "final/model.safetensors"):
        want, got = load_file(tmp_path / "straight" / name), load_file(out / name)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), name
    steps = logged_steps(out)
    assert [m["step"] for m in steps] == list(range(1, 7))  # each step once: a resume cut the log back
    assert [m["loss"] for m in steps] == [m["loss"] for m in logged_steps(tmp_path / "straight")]


class Died(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, no `except Exception` catches it."""


def test_death_while_replacing_a_checkpoint_never_leaves_a_partial_one(tmp_path, monkeypatch):
    """A run resumed from an older checkpoint of its folder saves over a newer one: dying while the newer one is
    deleted must not leave a `step_N` folder that still has its trainer.json but misses other files."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())

    def save(step):
        save_checkpoint(tmp_path, step, model, optimizer, {}, DistributedEnv(), keep_last=5)

    save(1)
    save(2)
    rmtree = shutil.rmtree

    def dying_rmtree(path, ignore_errors=False):
        path = Path(path)
        if (path / "trainer.json").is_file() and (path / "model.safetensors").is_file():
            (path / "model.safetensors").unlink()  # the worst order a directory listing can give
            raise Died
        rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", dying_rmtree)
    with pytest.raises(Died):
        save(2)
    monkeypatch.undo()
    assert_step_folders_complete(tmp_path)
    latest = resolve_checkpoint(tmp_path)
    assert latest.name == "step_1"  # the replacement was not finished: the newest whole checkpoint
    assert load_checkpoint(latest, model, optimizer, DistributedEnv())["step"] == 1
    save(3)  # the next save clears the hidden leftovers
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_1", "step_3"]
