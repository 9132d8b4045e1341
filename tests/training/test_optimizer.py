"""The learning-rate schedule, the optimizer's parameter groups and their gradient clipping."""

import math

import pytest
import torch

from nanomolmo2.models import NanoMolmo2
from nanomolmo2.training.optimizer import (
    build_optimizer,
    clip_each_group,
    freeze_components,
    lr_factor,
    set_learning_rates,
    trainable_groups,
)

from .conftest import tiny_config


def test_each_group_is_clipped_on_its_own():
    """LLM gradients [3, 4] (norm 5) and connector gradients [0.3, 0.4] (norm 0.5), limit 1: the LLM's are scaled
    by 1 / (5 + 1e-6), the connector's stay; one global clip would have scaled both by 1 / sqrt(25.25)."""
    llm, connector = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    llm.grad, connector.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])
    clip_each_group({"connector": [connector], "llm": [llm]}, torch.tensor([0.5, 5.0]), 1.0)
    assert llm.grad.tolist() == pytest.approx([3 / 5.000001, 4 / 5.000001], rel=1e-7)
    assert connector.grad.tolist() == pytest.approx([0.3, 0.4], rel=1e-7)


def test_schedule_values():
    # linear warmup over 10 steps, then cosine from the peak to 10% at step 110
    assert lr_factor(0, 10, 110) == pytest.approx(0.1)
    assert lr_factor(4, 10, 110) == pytest.approx(0.5)
    assert lr_factor(9, 10, 110) == pytest.approx(1.0)
    assert lr_factor(10, 10, 110) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, 10, 110) == pytest.approx(0.1)
    assert lr_factor(500, 10, 110) == pytest.approx(0.1)  # stays at the floor
    assert lr_factor(0, 0, 100) == pytest.approx(1.0)  # no warmup


def test_groups_have_their_own_lr_and_warmup(tmp_path):
    config = tiny_config(tmp_path, tmp_path, freeze_vision=False, lr_vision=1e-5, lr_connector=1e-3, lr_llm=1e-4,
                         warmup_vision=4, warmup_connector=2, warmup_llm=8, max_steps=100)  # fmt: skip
    model = NanoMolmo2(config.model)
    freeze_components(model, config)
    optimizer = build_optimizer(trainable_groups(model), config)
    lrs = set_learning_rates(optimizer, 1, config)
    assert lrs == pytest.approx({"vision": 1e-5 * 2 / 4, "connector": 1e-3, "llm": 1e-4 * 2 / 8})
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert any(p is model.llm.embed_tokens.new_weight for p in groups["connector"]["params"])  # new rows: connector
    assert not any(p is model.llm.embed_tokens.new_weight for p in groups["llm"]["params"])
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-6


def test_frozen_components_have_no_gradients_or_state(tmp_path):
    config = tiny_config(tmp_path, tmp_path, freeze_vision=True, lr_llm=0.0)  # lr 0 freezes too
    model = NanoMolmo2(config.model)
    freeze_components(model, config)
    optimizer = build_optimizer(trainable_groups(model), config)
    assert [g["name"] for g in optimizer.param_groups] == ["connector"]
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert not model.llm.layers[0].attn.qkv_proj.weight.requires_grad
    assert model.llm.embed_tokens.new_weight.requires_grad  # the new special-token rows train with the connector
    everything_frozen = NanoMolmo2(config.model)
    freeze_components(everything_frozen, tiny_config(tmp_path, tmp_path, lr_llm=0.0, freeze_connector=True))
    with pytest.raises(ValueError, match="nothing to train"):
        trainable_groups(everything_frozen)


@pytest.mark.parametrize("tied", [True, False])
def test_the_base_embedding_rows_stay_as_molmo2_keeps_them(tmp_path, tied):
    """Molmo2's ft_embedding = "lm_head": a pretrained LLM's base rows get no gradient; new rows, final norm and an
    untied head do."""
    config = tiny_config(tmp_path, tmp_path)
    config.model.llm.tie_word_embeddings = tied
    model = NanoMolmo2(config.model)
    freeze_components(model, config)  # from random weights: the table has to learn
    assert model.llm.embed_tokens.weight.requires_grad
    config.qwen3_path = str(tmp_path / "qwen3")  # a pretrained LLM (freeze_components reads the setting only)
    freeze_components(model, config)
    groups = trainable_groups(model)
    trained = {id(p) for params in groups.values() for p in params}
    assert id(model.llm.embed_tokens.weight) not in trained and id(model.llm.embed_tokens.new_weight) in trained
    assert id(model.llm.norm.weight) in trained
    assert tied == (model.llm.lm_head is None) and (tied or id(model.llm.lm_head.weight) in trained)
    config.freeze_embedding = False
    freeze_components(model, config)
    assert model.llm.embed_tokens.weight.requires_grad
