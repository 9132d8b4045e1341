"""A tiny training run for test_faults.py, to be killed: `python -m tests.training.fault_runner DATA OUT POINT`.

It resumes from OUT's latest complete checkpoint when there is one, else starts fresh (over what an earlier killed
attempt left: `overwrite`), as a job restarted by a scheduler would. It prints "start N" and, when it reaches
POINT, prints "at POINT" and blocks reading stdin until the test kills it: no timing decides where the kill lands.
POINT is one of
    step:N            inside training step N (after a forward pass of it)
    save:N:FILE       inside the save of step N, right after FILE (model.safetensors, optimizer.pt, rng.pt,
                      trainer.json) was written into the temporary folder
    rename:N          inside the save of step N, everything written and fsynced, before the rename to step_N
    rotate:N          inside the save of step N, while an older checkpoint is being deleted (renamed away, not
                      yet removed)
A run that never reaches POINT ends with "done" (the test then fails: the kill did not happen). Nothing in the
package is changed for this: the runner wraps functions of its own process.
"""

import shutil
import sys
from pathlib import Path

import torch

from nanomolmo2.training import checkpoint
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config

RUN = {
    "max_steps": 6,
    "save_every": 2,
    "keep_last": 2,
    "output_vocabulary": "data",
    "batch_size": 1,
    "micro_batch_size": 1,
}


def stop_here(point: str) -> None:
    print(f"at {point}", flush=True)
    sys.stdin.read()  # until the test's SIGKILL (it never closes our stdin first)
    raise AssertionError(f"stdin closed at {point}: the test was to kill this run")


def main(data: Path, out: Path, point: str) -> None:
    kind, _, rest = point.partition(":")
    step, _, name = rest.partition(":")
    saving = {"step": None, "renamed": False}  # the step being saved while a save runs; past its fsync

    def stops(kind_here: str, name_here: str = "") -> bool:
        return kind == kind_here and saving["step"] == int(step) and name == name_here

    def after(original, file_of):  # run a writer of the save, then stop if it wrote the chosen file
        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            if stops("save", Path(file_of(*args)).name):
                stop_here(point)
            return result

        return wrapped

    checkpoint.save_file = after(checkpoint.save_file, lambda state, path, *a: path)
    checkpoint.torch.save = after(torch.save, lambda obj, path, *a: path)
    checkpoint._write_json = after(checkpoint._write_json, lambda path, data: path)
    fsync_tree, rmtree = checkpoint.fsync_tree, shutil.rmtree

    def fsync_then_stop(path):
        fsync_tree(path)
        saving["renamed"] = True  # the rename comes next, then the rotation
        if stops("rename"):
            stop_here(point)

    def rmtree_or_stop(path, *args, **kwargs):
        rotating = saving["renamed"] and Path(path).name.endswith(".old") and Path(path).exists()
        if rotating and stops("rotate"):
            stop_here(point)
        rmtree(path, *args, **kwargs)

    checkpoint.fsync_tree = fsync_then_stop
    checkpoint.shutil.rmtree = rmtree_or_stop
    save_checkpoint = checkpoint.save_checkpoint

    def reporting_save(run_dir, step_now, *args, **kwargs):
        saving.update(step=step_now, renamed=False)
        try:
            return save_checkpoint(run_dir, step_now, *args, **kwargs)
        finally:
            saving.update(step=None, renamed=False)

    import nanomolmo2.training.trainer as trainer_module

    trainer_module.save_checkpoint = reporting_save
    resume = str(out) if checkpoint.checkpoint_dirs(out) else ""
    trainer = Trainer(tiny_config(data, out, resume_from=resume, overwrite=not resume, **RUN))
    print(f"start {trainer.step}", flush=True)
    forward = trainer._forward

    def forward_or_stop(*args, **kwargs):
        if kind == "step" and trainer.step + 1 == int(step):
            stop_here(point)
        return forward(*args, **kwargs)

    trainer._forward = forward_or_stop
    trainer.train()
    trainer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
