"""AdamW with one parameter group per component, and Molmo2's learning-rate schedule.

Groups (docs/MOLMO2.md, Optimizer and schedule): the vision encoder, the connector (with the 128 new special-token
embedding rows, which are new like the connector), and the LLM — each with its own peak lr and warmup.
A frozen component (its `freeze_*` flag, or lr 0) gets no gradients and no optimizer state; neither does a
pretrained LLM's base-vocabulary embedding table while `freeze_embedding` holds (Molmo2's default).

Schedule per group: linear warmup from 0 to the peak over `warmup` steps, then cosine decay to
`min_ratio` x peak at `max_steps`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def lr_factor(step: int, warmup: int, max_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr at `step` (0-based: the factor used for the update of step `step + 1`)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def component_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of each component; the new special-token rows travel with the connector."""
    new_rows = model.llm.embed_tokens.new_weight
    return {
        "vision": list(model.vision.parameters()),
        "connector": list(model.connector.parameters()) + [new_rows],
        "llm": [p for p in model.llm.parameters() if p is not new_rows],
    }


def freeze_components(model: nn.Module, config: TrainConfig) -> None:
    """Turn off the gradients of the frozen components (their `freeze_*` flag, or lr 0)."""
    for name, params in component_parameters(model).items():
        frozen = getattr(config, f"freeze_{name}") or getattr(config, f"lr_{name}") == 0
        if name == "vision" and frozen:
            model.vision.freeze()  # also eval mode and no_grad: no activations are kept
        for p in params:
            p.requires_grad_(not frozen)
    # a pretrained LLM's table is kept (and no dense 151,936-row gradient is filled at every step); a table that
    # starts random, in a run from scratch, has to learn
    if config.freeze_embedding and (config.qwen3_path or config.init_from):
        model.llm.embed_tokens.weight.requires_grad_(False)


def trainable_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of each component. Call it after FSDP2 wrapping, which replaces the
    parameters by sharded ones: the optimizer must hold those."""
    groups = {name: [p for p in params if p.requires_grad] for name, params in component_parameters(model).items()}
    groups = {name: params for name, params in groups.items() if params}
    if not groups:
        raise ValueError("every component is frozen: nothing to train")
    return groups


def clip_each_group(trainable: dict[str, list[nn.Parameter]], norms: torch.Tensor, max_norm: float) -> None:
    """Molmo2's clipping (olmo/train/trainer.py, train_step): each group's gradients are scaled by
    min(1, max_norm / (its own norm + 1e-6)), so a large LLM gradient does not shrink the connector's.
    norms: `[groups]` the gradient norms before clipping, in the dict's order (tracking.group_grad_norms)."""
    for params, norm in zip(trainable.values(), norms, strict=True):
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # a tensor: no host-device sync
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale.to(p.grad.dtype))


def build_optimizer(trainable: dict[str, list[nn.Parameter]], config: TrainConfig) -> torch.optim.AdamW:
    groups = [
        {
            "name": name,
            "params": params,
            "lr": getattr(config, f"lr_{name}"),
            "peak_lr": getattr(config, f"lr_{name}"),
            "warmup": getattr(config, f"warmup_{name}"),
        }
        for name, params in trainable.items()
    ]
    return torch.optim.AdamW(
        groups,
        betas=tuple(config.betas),
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=True,  # one kernel over all parameters, on GPU and CPU (5x faster than foreach on 2 CPU cores)
    )


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> dict[str, float]:
    """Set every group's lr for the update at `step`; return {group name: lr}."""
    lrs = {}
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * lr_factor(step, group["warmup"], config.max_steps, config.min_lr_ratio)
        lrs[group["name"]] = group["lr"]
    return lrs
