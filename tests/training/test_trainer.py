"""The training loop: exact resume, frozen parts, crash-safe checkpoints, and learning on every stage."""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nanomolmo2.models import NanoMolmo2
from nanomolmo2.training import checkpoint as checkpoint_module
from nanomolmo2.training import trainer as trainer_module
from nanomolmo2.training.checkpoint import checkpoint_dirs, resolve_checkpoint
from nanomolmo2.training.trainer import Trainer, run

from .conftest import SMALL_MODEL, tiny_config


def weights(run_dir, step):
    return load_file(run_dir / "checkpoints" / f"step_{step}" / "model.safetensors")


@pytest.mark.slow
def test_resume_is_bit_identical(shapes_data, tmp_path):
    """20 steps straight == 10 steps, stop, resume, 10 more: the same weights to the last bit."""
    run(tiny_config(shapes_data, tmp_path / "straight", max_steps=20, save_every=10))
    interrupted = Trainer(tiny_config(shapes_data, tmp_path / "split", max_steps=20, save_every=10))
    for _ in range(10):  # the same schedule (max_steps 20), stopped after the step-10 checkpoint
        interrupted.log(interrupted.train_step())
    interrupted.save()
    del interrupted
    run(tiny_config(shapes_data, tmp_path / "split", max_steps=20, save_every=10, resume_from=str(tmp_path / "split")))
    straight, split = weights(tmp_path / "straight", 20), weights(tmp_path / "split", 20)
    assert set(straight) == set(split)
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line)["loss"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert losses == resumed


def test_frozen_encoder_is_unchanged_and_final_model_loads(shapes_data, tmp_path):
    config = tiny_config(shapes_data, tmp_path / "run", max_steps=3)
    trainer = Trainer(config)
    before = {k: v.clone() for k, v in trainer.model.vision.state_dict().items()}
    connector_before = trainer.model.connector.projector.down_proj.weight.clone()
    trainer.train()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.vision.state_dict().items())
    assert not torch.equal(connector_before, trainer.model.connector.projector.down_proj.weight)
    final = NanoMolmo2.from_pretrained(tmp_path / "run" / "final")
    assert torch.equal(final.vision.pos_embed, trainer.model.vision.pos_embed)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


@pytest.mark.parametrize("has_compiler", [True, False])
def test_compile_needs_a_cpu_compiler_or_says_it_trains_uncompiled(shapes_data, tmp_path, monkeypatch, caplog,
                                                                   has_compiler):  # fmt: skip
    """compile = true wraps the decoder blocks in torch.compile; on a CPU with no C++ compiler (inductor could not
    build its kernels: the first step would crash) it warns and trains uncompiled instead."""
    if not has_compiler:
        monkeypatch.setattr(trainer_module.shutil, "which", lambda name: None)
    trainer = Trainer(tiny_config(shapes_data, tmp_path / "run", compile=True))
    compiled = [block._compiled_call_impl is not None for block in trainer.model.llm.layers]
    assert compiled == [has_compiler] * len(compiled)
    assert ("needs a C++ compiler" in caplog.text) == (not has_compiler)


def test_full_disk_during_save_fails_loudly_and_keeps_the_previous_checkpoint(shapes_data, tmp_path, monkeypatch):
    """ENOSPC in any write of a save (model, optimizer / RNG, trainer.json): the save raises, its half-written
    folder is removed, the previous checkpoint stays the one to resume from, and a later save works."""
    trainer = Trainer(tiny_config(shapes_data, tmp_path, max_steps=4, keep_last=5))
    trainer.train_step()
    trainer.save()
    trainer.train_step()

    def fill(path):  # a few bytes land, then the disk is full
        Path(path).write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    writers = {
        "model.safetensors": (checkpoint_module, "save_file", lambda state, path, *args, **kwargs: fill(path)),
        "optimizer.pt": (checkpoint_module.torch, "save", lambda obj, path, *args, **kwargs: fill(path)),
        "trainer.json": (Path, "write_text", lambda path, *args, **kwargs: fill(path)),
    }
    for name, (owner, attribute, full_disk) in writers.items():
        with monkeypatch.context() as patch:
            patch.setattr(owner, attribute, full_disk)
            with pytest.raises(OSError, match="No space left"):
                trainer.save()
        assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_1"], name  # the old one, complete
        assert not list((tmp_path / "checkpoints").glob(".step_*")), name  # no half checkpoint left behind
    assert resolve_checkpoint(tmp_path).name == "step_1"
    resumed = Trainer(tiny_config(shapes_data, tmp_path, max_steps=4, resume_from=str(tmp_path)))
    assert resumed.step == 1
    trainer.save()  # space again
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_1", "step_2"]


def test_keep_last_k(shapes_data, tmp_path):
    run(tiny_config(shapes_data, tmp_path, max_steps=6, save_every=1, keep_last=2))
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_5", "step_6"]


@pytest.fixture(scope="module")
def stage1_final(shapes_data, tmp_path_factory) -> Path:
    """A 2-step stage-1 model for stages 2 and 3 to start from."""
    out = tmp_path_factory.mktemp("stage1")
    run(tiny_config(shapes_data, out, max_steps=2))
    return out / "final"


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_loss_falls_on_every_stage(shapes_data, tmp_path, stage, request):
    overrides = {"max_steps": 25, "lr_connector": 3e-3, "lr_llm": 3e-3, "activation_checkpointing": stage == 3}
    if stage > 1:
        overrides["init_from"] = str(request.getfixturevalue("stage1_final"))
    run(tiny_config(shapes_data, tmp_path / "run", stage=stage, **overrides))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 1.0, losses  # at least one nat lower than where it started


def torchrun(config_overrides: dict, nproc: int, out) -> list[float]:
    """Run training under torchrun (gloo on CPU) and return the logged loss of every step."""
    as_text = {k: json.dumps(list(v)) if isinstance(v, tuple | list) else str(v) for k, v in config_overrides.items()}
    args = [f"--set={k}={v}" for k, v in as_text.items()]
    with socket.socket() as sock:  # a free port for the rendezvous (torchrun's port 0 does not pick one)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"]
    command += ["-m", "nanomolmo2.train", "--config", "tiny_stage1", "--out-dir", str(out), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def distributed_settings(data, **overrides) -> dict:
    """4 sequences per step as 2 micro-batches of 2: on 2 ranks, one micro-batch each; fp32 for exact comparisons."""
    return {**SMALL_MODEL, "data": data, "seq_len": 384, "batch_size": 4, "micro_batch_size": 2, "max_steps": 4,
            "save_every": 0, "eval_every": 0, "num_workers": 0, "warmup_connector": 1, "warmup_llm": 1,
            "dtype": "float32", "output_vocabulary": "data", **overrides}  # fmt: skip


def same_losses(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def fsdp_two_ranks(shapes_data, tmp_path_factory):
    """4 steps on 2 FSDP2 ranks, checkpoints at steps 2 and 4 (one run serves both FSDP tests: launches are slow)."""
    out = tmp_path_factory.mktemp("fsdp") / "two"
    losses = torchrun(distributed_settings(shapes_data, distributed="fsdp", save_every=2, keep_last=3), 2, out)
    return out, losses


@pytest.mark.slow
def test_two_ddp_processes_match_one(shapes_data, tmp_path):
    """2 ranks x 1 micro-batch == 1 process x 2 accumulated micro-batches: the same loss every step."""
    one = torchrun(distributed_settings(shapes_data, distributed="ddp"), 1, tmp_path / "one")
    two = torchrun(distributed_settings(shapes_data, distributed="ddp"), 2, tmp_path / "two")
    assert len(one) == 4 and same_losses(one, two), (one, two)


@pytest.mark.slow
def test_two_fsdp_processes_match_one(shapes_data, fsdp_two_ranks, tmp_path):
    """The same with FSDP2 (saving checkpoints does not change a step)."""
    one = torchrun(distributed_settings(shapes_data, distributed="fsdp"), 1, tmp_path / "one")
    assert len(one) == 4 and same_losses(one, fsdp_two_ranks[1]), (one, fsdp_two_ranks[1])


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_a_different_world_size(shapes_data, fsdp_two_ranks, tmp_path):
    """The 2-rank FSDP2 run's step-2 checkpoint resumed on 1 process: the same losses at steps 3 and 4."""
    import shutil

    two, losses = fsdp_two_ranks
    assert (two / "checkpoints" / "step_2" / "dcp").is_dir()
    shutil.copytree(two / "checkpoints" / "step_2", tmp_path / "from_step_2")
    settings = distributed_settings(shapes_data, distributed="fsdp", save_every=2, keep_last=3)
    one = torchrun({**settings, "resume_from": tmp_path / "from_step_2"}, 1, tmp_path / "one")
    assert same_losses(one, losses[2:]), (one, losses)


def test_non_finite_steps_are_skipped_then_stop_the_run(shapes_data, tmp_path):
    trainer = Trainer(tiny_config(shapes_data, tmp_path, max_bad_steps=2))
    forward = trainer._forward
    trainer._forward = lambda *args: forward(*args) * float("nan")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    metrics = trainer.train_step()
    assert metrics["skipped_update"] and trainer.step == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # no update
    with pytest.raises(RuntimeError, match="2 non-finite steps in a row"):
        trainer.train_step()
