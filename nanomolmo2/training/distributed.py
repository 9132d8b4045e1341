"""Multi-process training under torchrun: process groups, DDP or FSDP2 wrapping, and small collectives.

    torchrun --nproc_per_node 8 -m nanomolmo2.train --config stage1 --set distributed=fsdp

Without torchrun everything here degrades to a single process (rank 0 of 1). NCCL on GPUs, gloo on CPU.
- "ddp": every rank holds the whole model; gradients are averaged across ranks after backward.
- "fsdp": PyTorch's FSDP2 (`fully_shard`): each decoder block's parameters, gradients and optimizer state
  are sharded across ranks and gathered just in time, in bf16 when training in bf16 (gradients reduced in
  fp32); checkpoints go through torch.distributed.checkpoint, which can reload them on a different number
  of ranks. A frozen ViT is left out of sharding: every rank keeps a whole copy (in bf16, trainer.py), so it
  is never gathered. A rank whose micro-batch has no pixels gives the connector no gradients: zeros stand in
  for them in the reduce-scatter, which every rank must join with the same tensors.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistributedEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedEnv:
    """Join the process group torchrun describes in the environment (or run alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return DistributedEnv(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, env: DistributedEnv, mode: str, param_dtype: torch.dtype | None = None) -> nn.Module:
    """DDP or FSDP2 around `model` (returned unchanged in a single process).

    param_dtype: FSDP2's compute dtype of the gathered parameters (bf16 training: bf16; None: as stored)."""
    if not env.distributed:
        return model
    if mode == "ddp":
        # Text-only micro-batches leave the connector unused, hence find_unused_parameters.
        device_ids = [env.local_rank] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Inputs keep their dtype: the loss normaliser and loss weights must not be rounded to bf16.
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
        frozen_vision = not any(p.requires_grad for p in model.vision.parameters())
        blocks = list(model.llm.layers) + ([] if frozen_vision else list(model.vision.blocks))
        for block in blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy, ignored_params=set(model.vision.parameters()) if frozen_vision else None)
        model.set_reduce_scatter_unused_params(True)  # the connector of a rank without pixels: zeros
        return model
    raise ValueError(f"unknown distributed mode {mode!r}: use 'ddp' or 'fsdp'")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, enabled: bool):
    """A context that skips the gradient all-reduce of non-final micro-batches (DDP and FSDP2)."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not enabled:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
