"""What a resume must restore or refuse: RNG states, the data-shard layout, and config keys that exist."""

import random

import numpy as np
import pytest
import torch

from nanomolmo2.training.checkpoint import load_checkpoint, save_checkpoint
from nanomolmo2.training.config import ConfigError, load_config
from nanomolmo2.training.distributed import DistributedEnv
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config


def test_checkpoint_restores_torch_python_and_numpy_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    path = save_checkpoint(tmp_path, 1, model, optimizer, {}, DistributedEnv(), keep_last=2)
    want = (torch.rand(4), random.random(), np.random.rand())  # what comes next after the save
    torch.manual_seed(99), random.seed(99), np.random.seed(99)  # a restarted process starts elsewhere
    load_checkpoint(path, model, optimizer, DistributedEnv())
    got = (torch.rand(4), random.random(), np.random.rand())
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]


def test_resume_with_another_shard_layout_is_refused(shapes_data, tmp_path):
    """Data positions are stored per shard (micro-batch of a step): another layout cannot continue them."""
    first = Trainer(tiny_config(shapes_data, tmp_path, batch_size=2, micro_batch_size=1))
    first.train_step()
    first.save()
    with pytest.raises(ConfigError, match="micro_batch_size: 1 -> 2"):  # the saved config.json says so first
        Trainer(tiny_config(shapes_data, tmp_path, batch_size=2, micro_batch_size=2, resume_from=str(tmp_path)))
    (tmp_path / "config.json").unlink()  # without it, the checkpoint's own record of its shards
    with pytest.raises(ConfigError, match="data shards"):
        Trainer(tiny_config(shapes_data, tmp_path, batch_size=2, micro_batch_size=2, resume_from=str(tmp_path)))


def test_unknown_config_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="no_such_field"):
        load_config("tiny_stage1", {"no_such_field": 1})
    with pytest.raises(ConfigError, match="model.llm.widht"):
        load_config("tiny_stage1", {"model.llm.widht": 64})
    path = tmp_path / "typo.toml"
    path.write_text("stage = 1\nlearning_rate = 3e-4\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(path)


def test_config_values_are_converted_or_rejected():
    config = load_config("tiny_stage1", {"max_steps": "12", "freeze_llm": "true", "betas": "[0.8, 0.9]"})
    assert (config.max_steps, config.freeze_llm, config.betas) == (12, True, [0.8, 0.9])
    with pytest.raises(ValueError):
        load_config("tiny_stage1", {"freeze_llm": "maybe"})
