"""Molmo2's residual dropout (olmo/nn/llm.py `Dropout`): where it drops, by how much it scales, and which
positions count as response positions in stage 1."""

import torch

from nanomolmo2.models.config import LanguageModelConfig
from nanomolmo2.models.language_model import LanguageModel, ResidualDropout
from nanomolmo2.tokens import IGNORE_INDEX


def dropout(p: float, response_p: float) -> ResidualDropout:
    config = LanguageModelConfig.tiny()
    config.residual_dropout, config.response_residual_dropout = p, response_p
    return ResidualDropout(config)


def dropped_fraction(out: torch.Tensor, x: torch.Tensor, keep: float) -> float:
    """Every value is either 0 (dropped) or x / keep; returns the fraction dropped."""
    dropped = out == 0
    assert torch.allclose(out[~dropped], x[~dropped] / keep)
    return float(dropped.float().mean())


def test_stage_one_drops_only_response_positions():
    torch.manual_seed(0)
    x = torch.rand(4, 50, 64) + 0.5  # never 0 itself
    response = torch.zeros(4, 50, dtype=torch.bool)
    response[:, 10:30] = True
    module = dropout(0.0, 0.1).train()
    out = module(x, response)
    assert torch.equal(out[~response], x[~response])  # prompt, vision and padding positions untouched
    assert abs(dropped_fraction(out[response], x[response], 0.9) - 0.1) < 0.01  # 5,120 values, std 0.004
    assert torch.equal(module.eval()(x, response), x)  # evaluation: identity


def test_sft_drops_everywhere():
    torch.manual_seed(0)
    x = torch.rand(4, 50, 64) + 0.5
    out = dropout(0.1, 0.0).train()(x, None)
    assert abs(dropped_fraction(out, x, 0.9) - 0.1) < 0.005  # 12,800 values, std 0.0027
    assert torch.equal(dropout(0.0, 0.0).train()(x, None), x)


def test_response_positions_are_those_whose_next_token_has_loss():
    """labels [-, -, 5, 6, -] (answer "5 6" at positions 2-3): positions 1 and 2 predict them."""
    config = LanguageModelConfig.tiny(vocab_size=32)
    config.additional_vocab_size = 0
    config.response_residual_dropout = 0.1
    model = LanguageModel(config).train()
    seen = []
    model.layers[0].dropout.register_forward_hook(lambda module, args, out: seen.append(args[1]))
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX]])
    model(torch.tensor([[1, 2, 5, 6, 7]]), labels)
    assert seen[0].tolist() == [[False, True, True, False, False]]
