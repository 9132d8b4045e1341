"""The training loop: data shards -> micro-batches -> loss -> AdamW, with logging, validation and checkpoints.

One optimizer step takes `batch_size` packed sequences. They come in `ranks x accumulation` micro-batches
of `micro_batch_size` sequences, each from its own data shard (loader.py), so a step sees the same data
on 1 process or 8. The loss is the mean over every loss token of the global batch: each micro-batch's
summed loss is divided by the step's global token count (one all-reduce per step), which makes gradient
accumulation and data parallelism give exactly the loss and gradients of one big batch.

A non-finite loss or gradient norm skips the update (and is logged); `max_bad_steps` in a row stop the run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.datasets import CaptioningDataset, PointingDataset, TextDataset, VideoDataset, VQADataset
from ..data.loader import DataStream
from ..data.mixture import Mixture
from ..data.processor import Processor
from ..data.tokenizer import Tokenizer
from ..data.vocabulary import answer_vocabulary
from ..models.nanomolmo2 import NanoMolmo2
from ..tokens import IGNORE_INDEX
from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .config import TrainConfig, config_dict
from .distributed import (
    all_gather_objects,
    all_reduce_sum,
    cleanup,
    gradient_sync,
    init_distributed,
    unwrap,
    wrap_model,
)
from .flops import peak_flops, step_flops
from .optimizer import build_optimizer, freeze_components, set_learning_rates, trainable_groups

log = logging.getLogger(__name__)
DATASETS = {
    "caption": CaptioningDataset,
    "pointing": PointingDataset,
    "vqa": VQADataset,
    "text": TextDataset,
    "video": VideoDataset,
}


def build_model(config: TrainConfig) -> NanoMolmo2:
    """A previous stage's model, Molmo2's ViT + Qwen3 from folders, or a fresh `config.model`."""
    if config.init_from:
        return NanoMolmo2.from_pretrained(config.init_from)
    if config.molmo2_path or config.qwen3_path:
        if not (config.molmo2_path and config.qwen3_path):
            raise ValueError("molmo2_path and qwen3_path go together")
        return NanoMolmo2.from_molmo2_and_qwen3(config.molmo2_path, config.qwen3_path)
    if config.output_vocabulary == "data":  # the tokens of the answers in the training and validation data
        folders = [config.data] + ([config.val_data] if config.val_data else [])
        config.model.llm.output_token_ids = tuple(sorted({t for f in folders for t in answer_vocabulary(f)}))
    return NanoMolmo2(config.model)


def build_mixture(config: TrainConfig, folder: str, seed: int) -> Mixture:
    groups = []
    for rate, kinds in config.mixture:
        datasets = []
        for kind in kinds:
            if kind == "video":
                dataset = VideoDataset(folder, max_conversations=config.max_conversations, max_frames=config.max_frames)
            else:
                dataset = DATASETS[kind](folder, max_conversations=config.max_conversations)
            if len(dataset):
                datasets.append(dataset)
            else:
                log.warning("no %s data in %s: left out of the mixture", kind, folder)
        if datasets:
            groups.append((rate, datasets))
    return Mixture(groups, seed=seed)


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.env = init_distributed()
        env = self.env
        shards = config.batch_size // config.micro_batch_size
        if config.batch_size % config.micro_batch_size or shards % env.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must be micro_batch_size {config.micro_batch_size} x ranks "
                f"{env.world_size} x accumulation steps"
            )
        self.accumulation = shards // env.world_size
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)

        model = build_model(config)
        freeze_components(model, config)
        model.to(env.device)
        if config.activation_checkpointing:
            model.llm.gradient_checkpointing = True
        if config.compile:
            for block in model.llm.layers:
                block.compile()
        self.model = wrap_model(model, env, config.distributed)
        self.trainable = trainable_groups(model)  # after wrapping: FSDP2 replaces the parameters
        self.optimizer = build_optimizer(self.trainable, config)
        self.autocast = self._autocast_dtype()

        tokenizer = Tokenizer()
        crops = {} if config.max_crops is None else {"max_crops": config.max_crops}
        self.processor = Processor.for_model(unwrap(self.model).config, tokenizer, **crops)
        self.mixture = build_mixture(config, config.data, config.seed)
        # Every dataset reads every JSONL file of the folder: any one of them counts the folder's malformed lines.
        self.malformed_lines = self.mixture.datasets[0].malformed_lines
        # This rank's shards: micro-batch a of rank r comes from shard r * accumulation + a.
        self.shard_ids = [env.rank * self.accumulation + a for a in range(self.accumulation)]
        self.step = 0
        self.bad_steps = 0
        states = {}
        if config.resume_from:
            trainer_state = load_checkpoint(resolve_checkpoint(config.resume_from), self.model, self.optimizer, env)
            self.step, self.bad_steps = trainer_state["step"], trainer_state.get("bad_steps", 0)
            if trainer_state["shards"] != shards:
                raise ValueError(f"checkpoint has {trainer_state['shards']} data shards, this run {shards}")
            states = {int(k): v for k, v in trainer_state["data"].items()}
        self.streams = [self._stream(self.mixture, (s, shards), states.get(s)) for s in self.shard_ids]
        self.iterators = [iter(s) for s in self.streams]
        self.val_batches = self._validation_batches()
        self.out = Path(config.out_dir)
        self.writer = None
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not config.resume_from:  # a fresh run starts a fresh log (a resumed one appends to it)
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
            (self.out / "config.json").write_text(json.dumps(config_dict(config), indent=2, default=str))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))

    def _autocast_dtype(self) -> torch.dtype | None:
        choice = self.config.dtype
        if choice == "auto":  # bf16 where the hardware has it: GPUs, and CPUs with AMX / AVX512-BF16 (16x fp32 there)
            native = self.env.device.type == "cuda" or torch.cpu._is_avx512_bf16_supported()
            return torch.bfloat16 if native else None
        return {"float32": None, "bfloat16": torch.bfloat16}[choice]

    def _stream(self, mixture: Mixture, shard: tuple[int, int], state: dict | None) -> DataStream:
        return DataStream(
            mixture,
            self.processor,
            rows=self.config.micro_batch_size,
            seq_len=self.config.seq_len,
            num_workers=self.config.num_workers,
            weighting=self.config.loss_weighting,
            state=state,
            pin_memory=self.env.device.type == "cuda",
            shard=shard,
        )

    def _validation_batches(self) -> list[dict]:
        """A fixed set of held-out batches (the same at every evaluation)."""
        if not self.config.val_data or not self.config.val_batches:
            return []
        mixture = build_mixture(self.config, self.config.val_data, seed=12345)
        stream = DataStream(
            mixture, self.processor, self.config.micro_batch_size, self.config.seq_len, weighting="none",
            shard=(self.env.rank, self.env.world_size),
        )  # fmt: skip
        return [batch for _, batch in zip(range(self.config.val_batches), stream, strict=False)]

    # ------------------------------------------------------------------ one step

    def _forward(self, batch: dict, normalizer: torch.Tensor | float, z_loss: float) -> torch.Tensor:
        inputs = {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        with torch.autocast(self.env.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            return self.model(**inputs, z_loss_weight=z_loss, loss_normalizer=normalizer, return_logits=False).loss

    def train_step(self) -> dict:
        env, config = self.env, self.config
        wait = time.perf_counter()
        batches = [next(it) for it in self.iterators]
        data_wait = time.perf_counter() - wait
        # Global number of loss tokens of this step: every micro-batch divides its summed loss by it.
        counts = torch.tensor([float((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]).sum()
        real_tokens = float(sum(b["attention_mask"].sum() for b in batches))
        crops = float(sum(b["pixel_values"].shape[0] for b in batches if "pixel_values" in b))
        totals = all_reduce_sum(torch.tensor([counts, real_tokens, crops], device=env.device))
        loss_tokens = totals[0].clamp(min=1)
        lrs = set_learning_rates(self.optimizer, self.step, config)
        self.model.train()
        loss_sum = torch.zeros((), device=env.device)
        for i, batch in enumerate(batches):
            with gradient_sync(self.model, enabled=i == len(batches) - 1):
                # DDP/FSDP average gradients over ranks; scaling by the world size turns that into a sum.
                loss = self._forward(batch, loss_tokens / env.world_size, config.z_loss)
                loss.backward()
            loss_sum += loss.detach() / env.world_size
        global_loss = all_reduce_sum(loss_sum)
        params = [p for group in self.trainable.values() for p in group]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        finite = bool(torch.isfinite(global_loss)) and bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            log.warning(
                "step %d: non-finite loss %s / grad norm %s, update skipped", self.step + 1, global_loss, grad_norm
            )
            if self.bad_steps >= config.max_bad_steps:
                raise RuntimeError(f"{self.bad_steps} non-finite steps in a row: stopping (lower the lr?)")
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "step": self.step,
            "loss": float(global_loss),
            "grad_norm": float(grad_norm),
            "skipped_update": not finite,
            "lr": lrs,
            "tokens": float(totals[1]),
            "crops": float(totals[2]),
            "data_wait_s": data_wait,
            "packing_efficiency": float(np.mean([b["packing_efficiency"] for b in batches])),
            "skipped_items": sum(sum(s.skipped.values()) for s in self.streams),
        }

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if not self.val_batches:
            return None
        self.model.eval()
        sums = torch.zeros(2, device=self.env.device)
        for batch in self.val_batches:
            tokens = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            sums += torch.tensor([float(self._forward(batch, 1.0, 0.0)), tokens], device=self.env.device)
        sums = all_reduce_sum(sums)
        return float(sums[0] / sums[1].clamp(min=1))

    # ------------------------------------------------------------------ the run

    def save(self) -> None:
        data = {}
        for part in all_gather_objects(
            {s: stream.state() for s, stream in zip(self.shard_ids, self.streams, strict=True)}
        ):
            data.update(part)
        shards = self.config.batch_size // self.config.micro_batch_size
        state = {"bad_steps": self.bad_steps, "shards": shards, "data": data}
        save_checkpoint(self.out, self.step, self.model, self.optimizer, state, self.env, self.config.keep_last)

    def log(self, metrics: dict) -> None:
        if not self.env.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        for key, value in metrics.items():
            if isinstance(value, dict):
                for name, v in value.items():
                    self.writer.add_scalar(f"{key}/{name}", v, metrics["step"])
            elif isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, metrics["step"])

    def train(self) -> dict:
        config, env = self.config, self.env
        model_config = unwrap(self.model).config
        peak = peak_flops(env.device)
        bar = tqdm(total=config.max_steps, initial=self.step, disable=not env.is_main, desc=f"stage {config.stage}")
        last = {}
        while self.step < config.max_steps:
            start = time.perf_counter()
            metrics = self.train_step()
            seconds = time.perf_counter() - start
            metrics["seconds"] = seconds
            metrics["tokens_per_s"] = metrics["tokens"] / seconds
            if peak:
                flops = step_flops(
                    model_config, metrics["tokens"], metrics["crops"], config.seq_len / 2, not config.freeze_vision
                )
                metrics["mfu"] = flops / seconds / (peak * env.world_size)
            if config.eval_every and (self.step % config.eval_every == 0 or self.step == config.max_steps):
                metrics["val_loss"] = self.validation_loss()
            if self.step % config.log_every == 0 or "val_loss" in metrics:
                self.log(metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            bar.update(1)
            if config.save_every and self.step % config.save_every == 0 and self.step < config.max_steps:
                self.save()
            last = metrics
        bar.close()
        self.finish()
        return last

    def finish(self) -> None:
        """The last checkpoint, and the final model in the Molmo2 format (`final/`)."""
        if not any(p.name == f"step_{self.step}" for p in (self.out / "checkpoints").glob("step_*")):
            self.save()
        model = unwrap(self.model)
        if any(type(m).__name__.startswith("FSDP") for m in model.modules()):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = model.state_dict()
        skipped = Counter()
        for part in all_gather_objects(sum((s.skipped for s in self.streams), Counter())):
            skipped.update(part)
        if self.env.is_main:
            model.save_pretrained(self.out / "final", state_dict=state)
            self.writer.close()
            reasons = ", ".join(f"{reason} {n}" for reason, n in skipped.most_common())
            log.info(
                "final model in %s; skipped %d unusable data items (%s) and %d malformed JSONL lines",
                self.out / "final", sum(skipped.values()), reasons or "none", self.malformed_lines,
            )  # fmt: skip

    def close(self) -> None:
        cleanup()


def run(config: TrainConfig) -> dict:
    trainer = Trainer(config)
    try:
        return trainer.train()
    finally:
        trainer.close()
