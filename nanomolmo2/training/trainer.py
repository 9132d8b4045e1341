"""The training loop: data shards -> micro-batches -> loss -> AdamW, with logging, validation and checkpoints.

One optimizer step takes `batch_size` packed sequences. They come in `ranks x accumulation` micro-batches
of `micro_batch_size` sequences, each from its own data shard (loader.py), so a step sees the same data
on 1 process or 8. The loss is the weighted mean over every loss token of the global batch, as in Molmo2
(olmo/train/trainer.py, BatchDivisor.global_batch): each micro-batch's weighted loss sum is divided by the sum of
the loss weights of the whole step (one all-reduce per step; without loss weighting every weight is 1 and this is
the number of loss tokens), which makes gradient accumulation and data parallelism give exactly the loss and
gradients of one big batch. Gradients are clipped per parameter group (vision, connector, llm), each to
`grad_clip` on its own (olmo/torch_util.py, clip_grad_norm); `grad_norm` reports the norm of all of them together.

A non-finite loss or gradient norm skips the update (and is logged); `max_bad_steps` in a row stop the run.
Deciding that is the step's one host-device sync, after the whole backward is queued; everything the step
reports comes back with it. On GPUs: FlexAttention (`attention`), bf16 activations, a frozen ViT held in
bf16, uint8 pixels normalised on the device, and the model FLOPs of every step counted from its batches
(flops.py) for the MFU.
The run holds its folder (run_folder.py: a lock, no fresh run over an earlier one) from before the model is
built until `close()`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.data_root import build_mixture
from ..data.loader import DataStream
from ..data.mixture import Mixture
from ..data.processor import Processor
from ..data.tokenizer import checkpoint_tokenizer
from ..data.vocabulary import answer_vocabulary
from ..models.nanomolmo2 import NanoMolmo2
from ..tokens import IGNORE_INDEX
from .checkpoint import clear_leftovers, peek_trainer_state, resume_checkpoint, run_folder_of, save_checkpoint
from .config import ConfigError, TrainConfig, config_dict, resume_differences
from .distributed import (
    all_gather_objects,
    all_reduce_sum,
    cleanup,
    gradient_sync,
    init_distributed,
    unwrap,
    wrap_model,
)
from .flops import batch_flops, peak_flops
from .model_card import parameter_counts, write_model_card
from .optimizer import build_optimizer, clip_each_group, freeze_components, set_learning_rates, trainable_groups
from .run_folder import hold_run_folder, truncate_metrics
from .tracking import Tracker, data_summary, group_grad_norms

log = logging.getLogger(__name__)

# torch.compile generates C++ for the CPU (inductor) and builds it with one of these
CPU_COMPILERS = ("g++", "c++", "clang++")


def loss_weight_sum(batch: dict) -> float:
    """The sum of the loss weights of a micro-batch's loss tokens (negative weights count as 0, as in Molmo2)."""
    has_loss = batch["labels"][:, 1:] != IGNORE_INDEX
    return float(batch["loss_weights"][:, 1:][has_loss].clamp(min=0).double().sum())


def build_model(config: TrainConfig) -> NanoMolmo2:
    """A previous stage's model, pretrained parts from folders (Molmo2's ViT + pooling, or a vision encoder, with a
    Qwen3), or a fresh `config.model`."""
    if config.init_from:
        return NanoMolmo2.from_pretrained(config.init_from)
    if config.output_vocabulary == "data":  # the tokens of the answers in the training and validation data
        folders = [config.data] + ([config.val_data] if config.val_data else [])
        config.model.llm.output_token_ids = tuple(sorted({t for f in folders for t in answer_vocabulary(f)}))
    if config.molmo2_path or config.vision_path or config.qwen3_path:
        if not config.qwen3_path or bool(config.molmo2_path) == bool(config.vision_path):
            raise ConfigError("qwen3_path goes with one of molmo2_path (Molmo2's ViT and pooling) or vision_path")
        if config.vision_path:
            return NanoMolmo2.from_vision_and_qwen3(config.vision_path, config.qwen3_path, config.model)
        return NanoMolmo2.from_molmo2_and_qwen3(config.molmo2_path, config.qwen3_path)
    return NanoMolmo2(config.model)


def training_mixture(config: TrainConfig, folder: str, seed: int, frame_size: int | None = None) -> Mixture:
    """The config's mixture over a data folder. frame_size: video frames are resized to this square as they are
    decoded (the processor's crop size)."""
    options = dict(max_conversations=config.max_conversations, max_frames=config.max_frames, frame_size=frame_size)
    return build_mixture(folder, config.mixture, seed, **options)


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.env = init_distributed()
        env = self.env
        if config.batch_size < config.micro_batch_size * env.world_size and config.batch_size % env.world_size == 0:
            # A global batch smaller than one micro-batch per rank: each rank's micro-batch is its share of it.
            log.info("batch_size %d < micro_batch_size %d x %d ranks: micro_batch_size set to %d", config.batch_size,
                     config.micro_batch_size, env.world_size, config.batch_size // env.world_size)  # fmt: skip
            config.micro_batch_size = config.batch_size // env.world_size
        shards = config.batch_size // config.micro_batch_size
        if config.batch_size % config.micro_batch_size or shards % env.world_size:
            raise ConfigError(
                f"batch_size {config.batch_size} must be micro_batch_size {config.micro_batch_size} x ranks "
                f"{env.world_size} x accumulation steps"
            )
        if config.resume_from:  # the run it continues must be the same run: same model, data and steps
            saved = run_folder_of(config.resume_from) / "config.json"
            differences = resume_differences(config, json.loads(saved.read_text())) if saved.is_file() else []
            if differences:
                raise ConfigError(
                    f"cannot resume the run in {saved.parent} with other settings: {'; '.join(differences)}"
                )
        self.accumulation = shards // env.world_size
        if config.resume_from:  # a look at the checkpoint before anything is built (load_checkpoint checks again)
            self._check_shards(peek_trainer_state(config.resume_from) or {"shards": shards}, shards)
        self.out = Path(config.out_dir)
        self.run_folder = hold_run_folder(self.out, bool(config.resume_from), config.overwrite, env)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)

        model = build_model(config)
        model.llm.config.residual_dropout = config.residual_dropout  # a training setting: not part of checkpoints
        model.llm.config.response_residual_dropout = config.response_residual_dropout
        freeze_components(model, config)
        self.autocast = self._autocast_dtype()
        if model.vision.frozen and self.autocast == torch.bfloat16:
            model.vision.to(torch.bfloat16)  # no fp32 master weights to keep: half the memory, no per-step casts
        model.to(env.device)
        attention = {"auto": "flex" if env.device.type == "cuda" else "sdpa"}.get(config.attention, config.attention)
        if attention not in ("flex", "sdpa"):
            raise ValueError(f"attention {config.attention!r}: use 'auto', 'flex' or 'sdpa'")
        model.llm.attention = attention
        if config.activation_checkpointing:
            model.llm.gradient_checkpointing = True
        if config.compile and env.device.type == "cpu" and not any(map(shutil.which, CPU_COMPILERS)):
            log.warning("compile = true: torch.compile needs a C++ compiler on a CPU (%s), none found: training "
                        "uncompiled", ", ".join(CPU_COMPILERS))  # fmt: skip
        elif config.compile:
            for block in model.llm.layers:  # the decoder blocks: static shapes (packed rows of seq_len)
                block.compile()
        self.model = wrap_model(model, env, config.distributed, param_dtype=self.autocast)
        self.trainable = trainable_groups(model)  # after wrapping: FSDP2 replaces the parameters
        self.optimizer = build_optimizer(self.trainable, config)

        # The tokenizer of the checkpoint we start from when it ships one (else the bundled Qwen3 one).
        tokenizer = checkpoint_tokenizer(config.init_from, config.qwen3_path, config.molmo2_path)
        crops = {} if config.max_crops is None else {"max_crops": config.max_crops}
        # uint8 pixels from the workers (4x less through shared memory and to the GPU); the model normalises them
        self.processor = Processor.for_model(unwrap(self.model).config, tokenizer, uint8_pixels=True, **crops)
        self.mixture = training_mixture(config, config.data, config.seed, self.processor.crop_size)
        by_file = {f: n for d in self.mixture.datasets for f, n in getattr(d, "malformed_by_file", {}).items()}
        self.malformed_lines = sum(by_file.values())  # each file once, however many datasets read it
        # This rank's shards: micro-batch a of rank r comes from shard r * accumulation + a.
        self.shard_ids = [env.rank * self.accumulation + a for a in range(self.accumulation)]
        self.step = 0
        self.bad_steps = 0
        self.resumed_step = -1  # the step of the checkpoint this run resumed from
        self.saved_steps: set[int] = set()  # checkpoints this run wrote: the only ones its rotation may delete
        states = {}
        if config.resume_from:
            _, trainer_state = resume_checkpoint(config.resume_from, self.model, self.optimizer, env)
            self.step, self.bad_steps = trainer_state["step"], trainer_state.get("bad_steps", 0)
            self.resumed_step = self.step
            self._check_shards(trainer_state, shards)
            states = {int(k): v for k, v in trainer_state["data"].items()}
        self.stream = DataStream(
            self.mixture, self.processor, rows=config.micro_batch_size, seq_len=config.seq_len,
            num_workers=config.num_workers, weighting=config.loss_weighting, state=states,
            pin_memory=env.device.type == "cuda", shards=self.shard_ids, shard_count=shards,
        )  # fmt: skip
        self.iterator = iter(self.stream)  # one step = one batch per shard of this rank
        self.val_batches = self._validation_batches()
        self.tracker = None
        if env.is_main:
            clear_leftovers(self.out)  # of a killed run: this run holds the folder now
            if config.resume_from:  # the log goes on from the checkpoint: steps after it are done again
                truncate_metrics(self.out / "metrics.jsonl", self.step)
            (self.out / "config.json").write_text(json.dumps(config_dict(config), indent=2, default=str))
            data = data_summary(config.mixture, self.mixture.datasets, config.data)
            self.tracker = Tracker(config.log, self.out, config_dict(config), data, config.wandb_project)

    @staticmethod
    def _check_shards(trainer_state: dict, shards: int) -> None:
        if trainer_state["shards"] != shards:
            raise ConfigError(f"checkpoint has {trainer_state['shards']} data shards, this run {shards}")

    def _autocast_dtype(self) -> torch.dtype | None:
        choice = self.config.dtype
        if choice == "auto":  # bf16 where the hardware has it: GPUs, and CPUs with AMX / AVX512-BF16 (16x fp32 there)
            native = self.env.device.type == "cuda" or torch.cpu._is_avx512_bf16_supported()
            return torch.bfloat16 if native else None
        return {"float32": None, "bfloat16": torch.bfloat16}[choice]

    def _validation_batches(self) -> list[dict]:
        """A fixed set of held-out batches (the same at every evaluation)."""
        if not self.config.val_data or not self.config.val_batches:
            return []
        mixture = training_mixture(self.config, self.config.val_data, seed=12345, frame_size=self.processor.crop_size)
        stream = DataStream(
            mixture, self.processor, self.config.micro_batch_size, self.config.seq_len, weighting="none",
            shards=[self.env.rank], shard_count=self.env.world_size,
        )  # fmt: skip
        batches = [step[0] for _, step in zip(range(self.config.val_batches), stream, strict=False)]
        stream.close()
        return batches

    # ------------------------------------------------------------------ one step

    def _forward(self, batch: dict, normalizer: torch.Tensor | float, z_loss: float) -> torch.Tensor:
        inputs = {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        with torch.autocast(self.env.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            return self.model(**inputs, z_loss_weight=z_loss, loss_normalizer=normalizer, return_logits=False).loss

    def train_step(self) -> dict:
        env, config = self.env, self.config
        wait = time.perf_counter()
        batches = next(self.iterator)
        data_wait = time.perf_counter() - wait
        # Global sum of the loss weights of this step: every micro-batch divides its weighted loss sum by it.
        counts = torch.tensor([loss_weight_sum(b) for b in batches], dtype=torch.float64).sum()
        real_tokens = float(sum(b["attention_mask"].sum() for b in batches))
        crops = float(sum(b["pixel_values"].shape[0] for b in batches if "pixel_values" in b))
        model = unwrap(self.model)
        flops = sum(batch_flops(model.config, b, not model.vision.frozen) for b in batches)
        totals = torch.tensor([counts, real_tokens, crops, flops], dtype=torch.float64, device=env.device)
        totals = all_reduce_sum(totals)
        weight_total = totals[0].float().clamp(min=1e-12)  # 0 only when nothing has loss (and every sum is 0)
        lrs = set_learning_rates(self.optimizer, self.step, config)
        self.model.train()
        loss_sum = torch.zeros((), device=env.device)
        for i, batch in enumerate(batches):
            with gradient_sync(self.model, enabled=i == len(batches) - 1):
                # DDP/FSDP average gradients over ranks; scaling by the world size turns that into a sum.
                loss = self._forward(batch, weight_total / env.world_size, config.z_loss)
                loss.backward()
            loss_sum += loss.detach() / env.world_size
        global_loss = all_reduce_sum(loss_sum)
        group_norms = group_grad_norms(self.trainable)  # before the clip below scales the gradients
        clip_each_group(self.trainable, group_norms, config.grad_clip)
        grad_norm = group_norms.square().sum().sqrt()
        # The step's one host-device sync: whether to skip the update, and every number the step reports.
        values = torch.stack([global_loss, grad_norm.to(global_loss.device)]).double()
        values = torch.cat([values, totals, group_norms.to(totals)]).tolist()
        loss_value, norm_value, _, tokens, crops, flops, *group_values = values
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            log.warning(
                "step %d: non-finite loss %s / grad norm %s, update skipped", self.step + 1, loss_value, norm_value
            )
            if self.bad_steps >= config.max_bad_steps:
                raise RuntimeError(f"{self.bad_steps} non-finite steps in a row: stopping (lower the lr?)")
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "step": self.step,
            "loss": loss_value,
            "grad_norm": norm_value,
            "skipped_update": not finite,
            "lr": lrs,
            "tokens": tokens,
            "crops": crops,
            "model_flops": flops,
            "data_wait_s": data_wait,
            "packing_efficiency": float(np.mean([b["packing_efficiency"] for b in batches])),
            "skipped_items": sum(self.stream.skipped.values()),
            "padding_fraction": 1.0 - float(np.mean([b["packing_efficiency"] for b in batches])),
            "grad_norms": dict(zip(self.trainable, group_values, strict=True)),  # per group, before clipping
            "skipped": dict(self.stream.skipped),  # this rank's, per reason
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
        for part in all_gather_objects(self.stream.state()):
            data.update(part)
        shards = self.config.batch_size // self.config.micro_batch_size
        state = {"bad_steps": self.bad_steps, "shards": shards, "data": data}
        self.saved_steps.add(self.step)
        # Rotation: this run's checkpoints, and those up to where it resumed; never a newer one it did not write.
        save_checkpoint(
            self.out, self.step, self.model, self.optimizer, state, self.env, self.config.keep_last,
            rotate=lambda step: step in self.saved_steps or step <= self.resumed_step,
        )  # fmt: skip

    def log(self, metrics: dict) -> None:
        if not self.env.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.tracker.log(metrics)

    def train(self) -> dict:
        config, env = self.config, self.env
        peak = config.peak_flops or peak_flops(env.device)
        bar = tqdm(total=config.max_steps, initial=self.step, disable=not env.is_main, desc=f"stage {config.stage}")
        last = {}
        while self.step < config.max_steps:
            start = time.perf_counter()
            metrics = self.train_step()
            seconds = time.perf_counter() - start
            metrics["seconds"] = seconds
            metrics["tokens_per_s"] = metrics["tokens"] / seconds
            if peak:
                metrics["mfu"] = metrics["model_flops"] / seconds / (peak * env.world_size)
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
        resumed_here = (self.out / "checkpoints" / f"step_{self.step}" / "trainer.json").is_file()
        if self.step not in self.saved_steps and not (self.step == self.resumed_step and resumed_here):
            self.save()
        model = unwrap(self.model)
        if any(type(m).__name__.startswith("FSDP") for m in model.modules()):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = model.state_dict()
        skipped = Counter()
        for part in all_gather_objects(self.stream.skipped):
            skipped.update(part)
        if self.env.is_main:
            model.save_pretrained(self.out / "final", state_dict=state, tokenizer=self.processor.tokenizer.to_json())
            data = data_summary(self.config.mixture, self.mixture.datasets, self.config.data)
            write_model_card(self.out / "final", self.config, parameter_counts(state), self.step, data)
            self.tracker.close()
            reasons = ", ".join(f"{reason} {n}" for reason, n in skipped.most_common())
            log.info(
                "final model in %s; skipped %d unusable data items (%s) and %d malformed JSONL lines",
                self.out / "final", sum(skipped.values()), reasons or "none", self.malformed_lines,
            )  # fmt: skip

    def close(self) -> None:
        """Let go of the data streams' threads, the run folder and the process group."""
        self.stream.close()
        if self.run_folder is not None:
            self.run_folder.close()
        cleanup()


def run(config: TrainConfig) -> dict:
    trainer = Trainer(config)
    try:
        return trainer.train()
    finally:
        trainer.close()
