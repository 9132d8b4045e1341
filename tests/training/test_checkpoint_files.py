"""A checkpoint that cannot be read (nanomolmo2/training/checkpoint.py): the error names the file (and never advises
unpickling it), and resuming from a run folder falls back to the previous complete checkpoint with a warning."""

import logging
import shutil

import pytest
import torch

from nanomolmo2.formats.weights import CheckpointError
from nanomolmo2.training.trainer import Trainer, run

from .conftest import tiny_config


class NotTensors:
    """A pickled object where tensors belong: weights_only refuses it."""


FAST = {"output_vocabulary": "data", "batch_size": 1, "micro_batch_size": 1}


@pytest.fixture(scope="module")
def trained(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    run(tiny_config(shapes_data, out, max_steps=3, save_every=1, keep_last=5, **FAST))
    return out


@pytest.fixture
def three_checkpoints(trained, tmp_path):
    """A run folder with complete checkpoints of steps 1, 2 and 3 (a copy: each test damages its own)."""
    shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns("run.lock"))
    return tmp_path / "run"


def resume(shapes_data, out, source):
    trainer = Trainer(tiny_config(shapes_data, out, max_steps=3, resume_from=str(source), **FAST))
    trainer.close()
    return trainer


def test_a_corrupt_checkpoint_is_named_and_resume_falls_back(shapes_data, three_checkpoints, caplog):
    out = three_checkpoints
    model = out / "checkpoints" / "step_3" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:40])  # truncated by a crash or a bad disk
    with caplog.at_level(logging.WARNING):
        assert resume(shapes_data, out, out).step == 2
    assert any(
        "step_3/model.safetensors" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(CheckpointError, match=r"step_3/model\.safetensors: cannot be loaded"):
        resume(shapes_data, out, out / "checkpoints" / "step_3")  # that one, and no other: an error


@pytest.mark.parametrize("bad", ["random bytes", "pickled object", "wrong json"])
def test_a_bad_rng_or_trainer_file_is_named_without_unsafe_advice(shapes_data, three_checkpoints, bad):
    folder = three_checkpoints / "checkpoints" / "step_2"
    if bad == "random bytes":
        (folder / "rng.pt").write_bytes(b"\x80\x02not a torch file at all")
    elif bad == "pickled object":
        torch.save({"cpu": NotTensors()}, folder / "rng.pt")
    else:
        (folder / "trainer.json").write_text('{"step": 2, "rng": ')
    name = "trainer.json" if bad == "wrong json" else "rng.pt"
    with pytest.raises(CheckpointError, match=rf"step_2/{name}: cannot be loaded") as error:
        resume(shapes_data, three_checkpoints, folder)
    assert "weights_only=False" not in str(error.value)


def test_no_loadable_checkpoint_lists_every_problem(shapes_data, three_checkpoints):
    for k in (1, 2, 3):
        (three_checkpoints / "checkpoints" / f"step_{k}" / "optimizer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint of .* can be loaded") as error:
        resume(shapes_data, three_checkpoints, three_checkpoints)
    assert all(f"step_{k}/optimizer.pt" in str(error.value) for k in (1, 2, 3))
