"""One optimizer step against references written from the definitions, not from the trainer's own code.

The reference loss of a step is computed from full logits with `F.cross_entropy` / `logsumexp`: the weighted sum
over every loss token of every micro-batch, divided by the step's total loss weight (Molmo2's normaliser; the
number of loss tokens when every weight is 1). The trainer must give that loss and its gradients, whatever the
split into micro-batches; per-group clipping, z-loss and loss weights must change the step exactly as computed
by hand.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from nanomolmo2.models import NanoMolmo2
from nanomolmo2.tokens import IGNORE_INDEX
from nanomolmo2.training.trainer import Trainer, loss_weight_sum

from .conftest import tiny_config


def take_step(trainer: Trainer) -> tuple[dict, list[dict], dict[str, torch.Tensor]]:
    """One train_step; returns its metrics, the micro-batches it used, and the gradients the optimizer saw."""
    batches = next(trainer.iterator)
    trainer.iterator = iter([batches])
    seen: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.update({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    metrics = trainer.train_step()
    trainer.optimizer.step = step
    return metrics, batches, seen


def reference_loss(model: NanoMolmo2, batches: list[dict], z_loss: float = 0.0) -> torch.Tensor:
    """(sum over all loss tokens of weight * (CE + z * logsumexp^2)) / (sum of their weights), from full logits."""
    total, weight_sum = torch.zeros(()), 0.0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if torch.is_tensor(v) and k not in ("labels", "loss_weights")}
        logits = model(**inputs).logits.float()[:, :-1]  # [B, L-1, vocab]: position i predicts token i+1
        labels = batch["labels"][:, 1:]
        keep = labels != IGNORE_INDEX
        token_logits, targets = logits[keep], labels[keep]
        loss = F.cross_entropy(token_logits, targets, reduction="none")
        loss = loss + z_loss * torch.logsumexp(token_logits, dim=-1).square()
        total = total + (loss * batch["loss_weights"][:, 1:][keep]).sum()
        weight_sum += float(batch["loss_weights"][:, 1:][keep].sum())
    return total / weight_sum


def reference_gradients(model: NanoMolmo2, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close(got: dict, want: dict, rtol: float = 1e-4, atol: float = 1e-7) -> None:
    assert set(got) == set(want) and got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=name)


@pytest.fixture
def trainer_factory(shapes_data, tmp_path):
    def make(**overrides) -> tuple[Trainer, NanoMolmo2]:
        settings = {"batch_size": 4, "micro_batch_size": 2, "grad_clip": 1e9, "z_loss": 0.0, **overrides}
        trainer = Trainer(tiny_config(shapes_data, tmp_path / "run", **settings))
        return trainer, copy.deepcopy(trainer.model)  # the weights before the step, for the reference

    return make


def test_two_micro_batches_equal_one_forward_over_both(trainer_factory):
    """Loss and gradients of an accumulated step = summed token losses / all loss tokens of the step."""
    trainer, before = trainer_factory()
    assert trainer.accumulation == 2
    metrics, batches, grads = take_step(trainer)
    counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
    assert counts[0] != counts[1]  # a mean of per-micro-batch means would differ from the reference
    want = reference_loss(before, batches)
    assert metrics["loss"] == pytest.approx(float(want), rel=1e-5)
    assert_close(grads, reference_gradients(before, want))


def group_of(name: str) -> str:
    """Molmo2's clipping groups by parameter name: the 128 new embedding rows go with the connector."""
    if name.startswith("vision."):
        return "vision"
    return "connector" if name.startswith("connector.") or name.endswith("embed_tokens.new_weight") else "llm"


def test_gradient_clipping_scales_each_group_to_the_limit(trainer_factory):
    """grad_clip applies to the LLM and the connector (incl. the new token rows) separately: each group is scaled
    by limit / its own norm; the reported grad_norm is the norm of all gradients before clipping."""
    trainer, before = trainer_factory(grad_clip=1e-3)
    metrics, batches, grads = take_step(trainer)
    want = reference_gradients(before, reference_loss(before, batches))
    norms = {}
    for name, g in want.items():
        norms[group_of(name)] = norms.get(group_of(name), 0.0) + float(g.double().square().sum())
    norms = {k: math.sqrt(v) for k, v in norms.items()}
    assert set(norms) == {"connector", "llm"} and min(norms.values()) > 1e-3
    assert metrics["grad_norms"] == pytest.approx(norms, rel=1e-4)  # per group, before clipping
    assert metrics["grad_norm"] == pytest.approx(math.sqrt(sum(v * v for v in norms.values())), rel=1e-4)
    assert_close(grads, {n: g * (1e-3 / (norms[group_of(n)] + 1e-6)) for n, g in want.items()}, atol=1e-10)
    for group in norms:
        clipped = math.sqrt(sum(float(g.double().square().sum()) for n, g in grads.items() if group_of(n) == group))
        assert clipped == pytest.approx(1e-3, rel=1e-4)


def test_z_loss_adds_logsumexp_squared(trainer_factory):
    trainer, before = trainer_factory(z_loss=0.05)
    metrics, batches, grads = take_step(trainer)
    want = reference_loss(before, batches, z_loss=0.05)
    assert float(want) > float(reference_loss(before, batches)) + 1e-3  # z-loss is visible at this weight
    assert metrics["loss"] == pytest.approx(float(want), rel=1e-5)
    assert_close(grads, reference_gradients(before, want))


def test_molmo2_loss_weighting_reaches_the_step(trainer_factory):
    """With loss_weighting = "molmo2" every conversation of an example is weighted by Molmo2's rule (checked from
    the batch's annotation ids): 0.2 or 0.1 flat, or 2/sqrt(n) over all its loss tokens, with / sqrt(K) and the
    final <|im_end|> left out of n when the example has K > 1 conversations. The loss is divided by the step's
    total loss weight, which differs from its number of loss tokens here."""
    trainer, before = trainer_factory(loss_weighting="molmo2")
    metrics, batches, grads = take_step(trainer)
    not_one = 0
    for batch in batches:
        for row in range(batch["labels"].shape[0]):
            segments, annotations = batch["segment_ids"][row], batch["annotation_ids"][row]
            labelled = batch["labels"][row] != IGNORE_INDEX
            for segment in segments[labelled].unique():
                in_segment = segments == segment
                conversations = int(annotations[in_segment].max())
                for k in range(1, conversations + 1):
                    answer = labelled & in_segment & (annotations == k)
                    weight = batch["loss_weights"][row][answer]
                    n = int(answer.sum())
                    if n == 0:
                        continue
                    assert torch.all(weight == weight[0])  # one weight per conversation
                    length_rule = (
                        2 / math.sqrt(n) if conversations == 1 else 2 / math.sqrt(n - 1) / math.sqrt(conversations)
                    )
                    assert any(abs(float(weight[0]) - r) < 1e-6 for r in (length_rule, 0.2, 0.1))
                    not_one += abs(float(weight[0]) - 1.0) > 1e-6
    assert not_one > 0
    weight_sum = sum(float(b["loss_weights"].sum()) for b in batches)
    assert abs(weight_sum - sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)) > 1
    want = reference_loss(before, batches)
    assert metrics["loss"] == pytest.approx(float(want), rel=1e-5)
    assert_close(grads, reference_gradients(before, want))


def test_the_normaliser_is_the_sum_of_loss_weights():
    """Two micro-batches with weights [0.5, 0.5] and [2.0] on their loss tokens: the step divides by 3."""
    first = {"labels": torch.tensor([[9, 5, 6, IGNORE_INDEX]]), "loss_weights": torch.tensor([[0.0, 0.5, 0.5, 0.0]])}
    second = {"labels": torch.tensor([[IGNORE_INDEX, 7]]), "loss_weights": torch.tensor([[0.0, 2.0]])}
    assert loss_weight_sum(first) + loss_weight_sum(second) == 3.0
    # the first position's label is never a target, and positions without a label never count
    assert (
        loss_weight_sum({"labels": torch.tensor([[5, IGNORE_INDEX]]), "loss_weights": torch.tensor([[4.0, 1.0]])}) == 0
    )


def test_bad_step_counter_counts_only_steps_in_a_row(trainer_factory):
    """max_bad_steps = 2: NaN, fine, NaN, fine, NaN never stops the run; two NaNs in a row do."""
    trainer, _ = trainer_factory(max_bad_steps=2)
    forward, poisoned = trainer._forward, [True, False, True, False, True]
    for nan in poisoned:
        trainer._forward = (lambda *a: forward(*a) * float("nan")) if nan else forward
        assert trainer.train_step()["skipped_update"] == nan
    trainer._forward = lambda *a: forward(*a) * float("nan")
    with pytest.raises(RuntimeError, match="2 non-finite steps in a row"):
        trainer.train_step()


def test_final_model_is_the_trained_model(shapes_data, tmp_path):
    """final/ holds the weights after the last step, tensor for tensor (not the ones the run started with)."""
    trainer = Trainer(tiny_config(shapes_data, tmp_path / "run", max_steps=3))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    trained = trainer.model.state_dict()
    final = NanoMolmo2.from_pretrained(tmp_path / "run" / "final").state_dict()
    if "llm.lm_head.weight" not in trained:  # tied head: Molmo2 files carry an explicit copy
        trained = {**trained, "llm.lm_head.weight": trained["llm.embed_tokens.weight"]}
    assert set(final) == set(trained)
    assert all(torch.equal(final[k], trained[k]) for k in final)
    assert not torch.equal(start["llm.layers.0.mlp.down_proj.weight"], final["llm.layers.0.mlp.down_proj.weight"])


def test_a_bf16_step_tracks_the_fp32_step(trainer_factory):
    """bf16 autocast (the default where the hardware has it) gives the fp32 step's loss within 2% and gradients
    pointing the same way (cosine > 0.99), on the same micro-batches."""
    fp32, _ = trainer_factory(dtype="float32")
    metrics32, batches, grads32 = take_step(fp32)
    bf16, _ = trainer_factory(dtype="bfloat16")
    assert bf16.autocast == torch.bfloat16
    bf16.iterator = iter([batches])
    metrics16, _, grads16 = take_step(bf16)
    assert metrics16["loss"] == pytest.approx(metrics32["loss"], rel=2e-2)
    flat32 = torch.cat([grads32[n].flatten() for n in sorted(grads32)])
    flat16 = torch.cat([grads16[n].flatten().float() for n in sorted(grads32)])
    assert float(F.cosine_similarity(flat32, flat16, dim=0)) > 0.99
