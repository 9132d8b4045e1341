"""Crashes during training (nanomolmo2/training/checkpoint.py, trainer.py): a tiny run killed with SIGKILL at random
moments, during steps and in the middle of checkpoint saves, resumes from its last complete checkpoint and ends
with the same weights as a run that was never interrupted; a half-written or half-deleted checkpoint folder is
never resumed from. (A full disk during a save: test_trainer.py.)"""

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nanomolmo2.training import checkpoint as checkpoint_module
from nanomolmo2.training.checkpoint import (
    STEP_DIR,
    checkpoint_dirs,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from nanomolmo2.training.distributed import DistributedEnv
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config
from .fault_runner import RUN

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "rng.pt", "trainer.json"}
PAUSE = 0.4  # seconds the runner sleeps inside each save, after writing the model file
# (a line the run prints, the longest random delay before the kill): kills 1 and 3 land in a step or a save,
# wherever the delay takes them; kill 2 lands inside the first save the resumed run makes.
KILLS = [("step 3", 0.8), ("saving", 0.0), ("step 5", 0.8)]


def launch(data: Path, out: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.training.fault_runner", str(data), str(out), str(PAUSE)]
    with open(log, "a") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    watchdog = threading.Timer(180, process.kill)  # a hung run fails the test instead of blocking it
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
    return int(STEP_DIR.match(found[-1].name).group(1)) if found else 0


def assert_step_folders_complete(out: Path) -> None:
    """Every `step_N` folder holds a whole checkpoint (temp and trash folders are hidden names)."""
    for folder in (out / "checkpoints").glob("step_*"):
        assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES, folder


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """The loss of every step; a step redone after a resume keeps its last value."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m["loss"] for m in map(json.loads, lines)}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(shapes_data, tmp_path):
    straight = Trainer(tiny_config(shapes_data, tmp_path / "straight", **RUN))
    straight.train()
    straight.close()

    out, log, rng = tmp_path / "killed", tmp_path / "stderr.txt", random.Random(0)
    for wanted, max_delay in KILLS:
        start = latest_step(out)
        process = launch(shapes_data, out, log)
        lines = read_until(process, wanted)
        assert lines[0] == f"start {start}"  # resumed from the latest complete checkpoint (or fresh)
        time.sleep(rng.uniform(0, max_delay))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode in (-signal.SIGKILL, 0), log.read_text()[-2000:]  # 0: it finished first
        assert_step_folders_complete(out)
        if max_delay == 0:  # killed inside a save: half a checkpoint in its temp folder, never resumed from
            temp = out / "checkpoints" / lines[-1].split()[1]
            assert (temp / "model.safetensors").is_file() and not (temp / "trainer.json").exists()
            assert latest_step(out) == start

    start = latest_step(out)
    process = launch(shapes_data, out, log)
    lines = process.communicate(timeout=300)[0].splitlines()
    assert process.returncode == 0, log.read_text()[-2000:]
    assert lines[0] == f"start {start}" and lines[-1] == "done"
    assert_step_folders_complete(out)
    for name in ("checkpoints/step_6/model.safetensors", "final/model.safetensors"):
        want, got = load_file(tmp_path / "straight" / name), load_file(out / name)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), name
    assert losses_by_step(out) == losses_by_step(tmp_path / "straight")


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
