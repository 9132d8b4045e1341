"""The run folder (nanomolmo2/training/run_folder.py, checkpoint.py, trainer.py): a fresh run never destroys an
earlier one, a second process on a held folder fails at once, rotation deletes only this run's checkpoints and
never the one just written, and a resumed log holds each step once."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanomolmo2.train import add_arguments, config_from_args
from nanomolmo2.training import trainer as trainer_module
from nanomolmo2.training.checkpoint import checkpoint_dirs
from nanomolmo2.training.run_folder import RunFolderError
from nanomolmo2.training.trainer import Trainer, run

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
FAST = {"output_vocabulary": "data", "batch_size": 1, "micro_batch_size": 1}


def names(out: Path) -> list[str]:
    return [p.name for p in checkpoint_dirs(out)]


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_fresh_run_refuses_a_used_folder_and_overwrite_starts_over(shapes_data, tmp_path):
    out = tmp_path / "run"
    run(tiny_config(shapes_data, out, max_steps=2, save_every=1, keep_last=5, seed=1, **FAST))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "tensorboard" not in p.parts}
    assert names(out) == ["step_1", "step_2"] and steps(out) == [1, 2]
    with pytest.raises(RunFolderError, match="holds an earlier run .* --resume-from .* --overwrite"):
        Trainer(tiny_config(shapes_data, out, max_steps=1, **FAST))
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing of the earlier run was touched

    last = run(tiny_config(shapes_data, out, max_steps=1, overwrite=True, **FAST))
    assert last["step"] == 1 and names(out) == ["step_1"] and steps(out) == [1]  # the earlier run is gone whole
    assert json.loads((out / "config.json").read_text())["seed"] == 0  # this run's, not the earlier one's
    argv = ["--config", "tiny_stage1", "--overwrite"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(argv)).overwrite is True
    assert config_from_args(parser.parse_args(argv[:2])).overwrite is False


def test_a_second_process_on_a_held_folder_fails_before_building_anything(shapes_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom nanomolmo2.training.run_folder import RunFolder\n"
         "folder = RunFolder.open(sys.argv[1], resuming=False)\nprint('held', flush=True)\nsys.stdin.read()", str(out)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"  # the other run holds the folder now
        monkeypatch.setattr(trainer_module, "build_model", lambda config: pytest.fail("built a model first"))
        with pytest.raises(RunFolderError, match=rf"in use by another run \(process {holder.pid}\)"):
            Trainer(tiny_config(shapes_data, out))
    finally:
        holder.stdin.close()
        holder.wait()
    monkeypatch.undo()
    assert holder.returncode == 0
    trainer = Trainer(tiny_config(shapes_data, out, max_steps=1, **FAST))  # the holder is gone: the folder is free
    trainer.close()


def test_rotation_keeps_what_this_run_did_not_write_and_the_log_holds_each_step_once(shapes_data, tmp_path):
    """Resumed from step 2 of a folder that also holds steps 3 and 4 (another line of the same run), with keep_last
    1: the new step 3 replaces the old one and is kept (save_checkpoint's path exists), steps 1 and 2 (up to the
    resume point) rotate away, and the newer step 4 is left alone. The log is cut back to step 2, then goes on."""
    out = tmp_path / "run"
    run(tiny_config(shapes_data, out, max_steps=4, save_every=1, keep_last=10, **FAST))
    assert names(out) == [f"step_{k}" for k in range(1, 5)]
    trainer = Trainer(tiny_config(shapes_data, out, max_steps=3, save_every=1, keep_last=1,
                                  resume_from=str(out / "checkpoints" / "step_2"), **FAST))  # fmt: skip
    assert trainer.step == 2 and steps(out) == [1, 2]
    trainer.train()
    trainer.close()
    assert names(out) == ["step_3", "step_4"] and steps(out) == [1, 2, 3]
    assert json.loads((out / "checkpoints" / "step_3" / "trainer.json").read_text())["step"] == 3
