"""nanomolmo2/models/loss.py against a loss written from the definition, and when its logits are chunked."""

import pytest
import torch
import torch.nn.functional as F

import nanomolmo2.models.loss as loss_module
from nanomolmo2.models.loss import causal_lm_loss
from nanomolmo2.tokens import IGNORE_INDEX

# 2 rows of 6 positions, 8 wide, 5 words; 7 labels carry loss (N = 7, so N != D and N * V = 35)
VOCAB, WIDTH = 5, 8


def case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, WIDTH, requires_grad=True)
    head = torch.randn(VOCAB, WIDTH)
    no = IGNORE_INDEX
    labels = torch.tensor([[0, 1, 2, no, 3, 4], [0, no, 0, 1, 2, no]])  # a row's first label is never predicted
    return hidden, labels, head


def reference(hidden: torch.Tensor, labels: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Full logits, shifted: position i predicts label i + 1; the mean over the labels that carry loss."""
    logits = hidden[:, :-1] @ head.t()
    return F.cross_entropy(logits.reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def test_defaults_are_the_mean_cross_entropy_without_z_loss_with_the_logits():
    hidden, labels, head = case()
    loss, logits = causal_lm_loss(hidden, labels, head)
    assert torch.allclose(loss, reference(hidden, labels, head), atol=1e-6)
    rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero().unbind(-1)
    assert torch.allclose(logits, hidden[rows, cols] @ head.t(), atol=1e-6)


@pytest.mark.parametrize(
    "budget, grad, return_logits, chunks",
    [
        (35, True, False, 0),  # N * V logits fit exactly
        (34, True, False, 2),  # 34 // 5 = 6 rows a chunk: 6 + 1
        (15, True, False, 3),  # 3 rows a chunk: 3 + 3 + 1
        (4, True, False, 7),  # less than one row of logits: still one row a chunk
        (15, False, False, 0),  # no backward: nothing to recompute, no chunks
        (15, True, True, 0),  # logits asked for: computed whole
    ],
)
def test_logits_are_chunked_exactly_when_they_would_not_fit(monkeypatch, budget, grad, return_logits, chunks):
    calls = []

    def counting_checkpoint(function, *args, **kwargs):
        calls.append(args[0].shape[0])
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(loss_module, "LOGITS_BUDGET", budget)
    monkeypatch.setattr(loss_module, "checkpoint", counting_checkpoint)
    hidden, labels, head = case()
    with torch.set_grad_enabled(grad):
        loss, logits = causal_lm_loss(hidden, labels, head, return_logits=return_logits)
    assert len(calls) == chunks and sum(calls) == (7 if chunks else 0)
    assert (logits is not None) == return_logits
    assert torch.allclose(loss, reference(hidden, labels, head), atol=1e-6)


def test_one_loss_token_is_its_own_mean_and_none_gives_zero():
    hidden, labels, head = case()
    one = torch.full_like(labels, IGNORE_INDEX)
    one[1, 3] = 2  # predicted by position (1, 2)
    loss, _ = causal_lm_loss(hidden, one, head)
    assert torch.allclose(loss, F.cross_entropy(hidden[1, 2] @ head.t(), torch.tensor(2)), atol=1e-6)
    nothing, _ = causal_lm_loss(hidden, torch.full_like(labels, IGNORE_INDEX), head)
    assert nothing.item() == 0.0
