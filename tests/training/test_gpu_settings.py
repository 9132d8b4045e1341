"""What the first GPU run depends on, checked on a CPU: FSDP2 in bf16 with fp32 reductions, the frozen ViT left
whole and out of sharding, zero gradients for a connector a rank did not use, DDP checkpoints that one process
resumes, CUDA RNG states restored per device (with a mocked CUDA), and the trainer's GPU-facing choices."""

import pytest
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config
from nanomolmo2.training import checkpoint
from nanomolmo2.training.checkpoint import load_checkpoint, save_checkpoint
from nanomolmo2.training.distributed import DistributedEnv, wrap_model
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config

WRAPPED = DistributedEnv(rank=0, world_size=2)  # wrap_model wraps only with several ranks; one process plays rank 0


@pytest.fixture
def process_group():
    """A one-process gloo group, torn down after the test (collectives then run on this process alone)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def tiny_model(seed: int = 0) -> NanoMolmo2:
    torch.manual_seed(seed)
    model = NanoMolmo2(NanoMolmo2Config.tiny())
    model.vision.freeze()
    return model


def adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])


def test_fsdp2_gathers_bf16_reduces_fp32_leaves_the_frozen_vit_whole_and_zero_fills_unused_grads(process_group):
    model = tiny_model()
    model.vision.to(torch.bfloat16)  # as the trainer holds a frozen ViT under bf16
    wrap_model(model, WRAPPED, "fsdp", param_dtype=torch.bfloat16)
    assert all(not isinstance(p, DTensor) and p.dtype == torch.bfloat16 for p in model.vision.parameters())
    assert all(isinstance(p, DTensor) for p in model.llm.parameters())
    assert all(isinstance(p, DTensor) for p in model.connector.parameters())
    outputs = []
    model.llm.layers[0].mlp.down_proj.register_forward_hook(lambda m, args, out: outputs.append(out.dtype))
    ids = torch.randint(0, 1000, (2, 16))
    weights = torch.full((2, 16), 1 / 3)
    loss = model(ids, labels=ids, loss_weights=weights, loss_normalizer=torch.tensor(30.0)).loss  # no pixels
    loss.backward()
    assert outputs == [torch.bfloat16]  # computed with the bf16 copies FSDP gathered, no autocast needed
    # the normaliser and weights were not rounded to bf16 on the way in: 1/3 / 30 per token, summed in fp32
    assert loss.dtype == torch.float32
    grads = [p.grad for p in model.connector.parameters()]
    assert all(g is not None and float(g.full_tensor().abs().max()) == 0 for g in grads)  # zeros, not None
    assert all(p.grad.dtype == torch.float32 for p in model.llm.parameters())  # reduced in fp32


def test_a_ddp_checkpoint_has_plain_keys_and_resumes_in_one_process(process_group, tmp_path):
    model = tiny_model()
    ddp = wrap_model(model, WRAPPED, "ddp")
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
    path = save_checkpoint(tmp_path, 3, ddp, adamw(ddp), {"shards": 1, "data": {}}, WRAPPED, keep_last=2)
    with safe_open(path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("module.") for k in keys)
    single = tiny_model(seed=1)
    load_checkpoint(path, single, adamw(single), DistributedEnv())
    assert all(
        torch.equal(a, b) for a, b in zip(single.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_an_older_checkpoint_with_ddp_prefixes_still_loads(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path, 1, model, adamw(model), {}, DistributedEnv(), keep_last=2)
    prefixed = {f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(prefixed, path / "model.safetensors")
    fresh = tiny_model(seed=1)
    load_checkpoint(path, fresh, adamw(fresh), DistributedEnv())
    assert torch.equal(fresh.llm.layers[0].attn.qkv_proj.weight, model.llm.layers[0].attn.qkv_proj.weight)


class FakeCuda:
    """torch.cuda's RNG functions for a machine with `devices` GPUs; every GPU's state is distinct."""

    def __init__(self, monkeypatch, devices: int) -> None:
        self.current, self.devices, self.restored = 0, devices, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.state(self.current))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.set(state))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.state(d) for d in range(devices)])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("every GPU's state applied"))

    @staticmethod
    def state(device: int) -> torch.Tensor:
        return torch.full((8,), 10 + device, dtype=torch.uint8)

    def set(self, state: torch.Tensor) -> None:
        if self.current >= self.devices:
            raise IndexError("no such GPU")
        self.restored.append((self.current, int(state[0])))


def test_each_rank_restores_its_own_gpu_rng_state_on_any_machine(monkeypatch, tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    saved_on = FakeCuda(monkeypatch, devices=8)  # the run that saved: 8 GPUs, one rank each
    path = save_checkpoint(tmp_path, 1, model, optimizer, {}, DistributedEnv(rank=0, world_size=8), keep_last=2)
    saved_on.current = 5  # what rank 5 writes into the same checkpoint (each rank writes its own file)
    torch.save({"cpu": torch.get_rng_state(), "cuda": checkpoint._cuda_rng()}, path / "rng_rank5.pt")

    one_gpu = FakeCuda(monkeypatch, devices=1)  # resumed on a machine with one GPU: each rank's current device is 0
    for rank, want in ((5, 15), (0, 10), (6, 10)):  # rank 6 wrote nothing here: rank 0's state
        load_checkpoint(path, model, optimizer, DistributedEnv(rank=rank, world_size=8, local_rank=0))
        assert one_gpu.restored[-1] == (0, want), rank
    # Older checkpoints: rank 0 saved the list of every GPU's state (here of a 2-GPU machine), for all ranks.
    (path / "rng_rank5.pt").unlink()
    torch.save({"cpu": torch.get_rng_state(), "cuda": [FakeCuda.state(d) for d in range(2)]}, path / "rng.pt")
    for local_rank, want in ((0, 10), (1, 11)):
        load_checkpoint(path, model, optimizer, DistributedEnv(rank=local_rank, world_size=4, local_rank=local_rank))
        assert one_gpu.restored[-1] == (0, want)
    count = len(one_gpu.restored)
    load_checkpoint(path, model, optimizer, DistributedEnv(rank=3, world_size=4, local_rank=3))
    assert len(one_gpu.restored) == count  # no state for a device the older list does not have: left alone


def test_trainer_on_cpu_in_bf16_holds_the_frozen_vit_in_bf16_and_feeds_uint8(shapes_data, tmp_path):
    trainer = Trainer(tiny_config(shapes_data, tmp_path / "run", dtype="bfloat16", max_steps=1))
    model = trainer.model
    assert model.llm.attention == "sdpa"  # "auto" on a CPU: no FlexAttention backward there
    assert all(p.dtype == torch.bfloat16 for p in model.vision.parameters())
    assert all(p.dtype == torch.float32 for p in model.llm.parameters())  # master weights stay fp32
    batch = next(trainer.iterator)[0]
    assert batch["pixel_values"].dtype == torch.uint8 and "loss_positions" in batch
    trainer.iterator = iter([[batch]])
    metrics = trainer.train_step()
    assert metrics["model_flops"] > 0 and metrics["loss"] > 0
    trainer.close()
    with pytest.raises(ValueError, match="attention 'fast'"):
        Trainer(tiny_config(shapes_data, tmp_path / "other", attention="fast"))
