"""Training throughput of the real-size nanoMolmo2 on one GPU, as a gate: tokens/s, MFU, memory, the kernel that ran.

    python bench/gpu.py                  # one H100 / H200: ~9.5 minutes at most, unattended; exit status 1 on a failure
    python bench/gpu.py --tiny           # a tiny model on the CPU, to check the script (the test suite runs it)
    python bench/gpu.py --only 36k-flex --no-smoke

Model: Qwen3-0.6B (1024 wide, 28 layers, 16 q / 8 kv heads of 128, FFN 3072, vocab 151,936, tied) with
Molmo2's vision encoder at full size (SigLIP 2 so400m/14: 1152 wide, 16 heads, MLP 4304, 378-px crops,
blocks 0..24 built for the features of blocks 24 and 18) and the attention-pooling connector; random weights.
The step is the trainer's (nanomolmo2/training/trainer.py): fp32 master weights, bf16 autocast, the frozen ViT
held in bf16, uint8 pixels normalised on the device, loss positions from the host, logits only at the loss
positions, z-loss 1e-4, grad clipping, fused AdamW.

Configurations, one packed row each (the stage configs' micro-batches), built like the processor builds them
(real pooling windows and token layouts, random pixels and text ids), in this order (later ones are skipped,
and said so, when the time limit would be passed):
  4k-flex            4,096 tokens of image examples (480x640 images, 5 crops each), FlexAttention   (stage 1)
  16k-flex           16,384 tokens: a 128-frame video + image examples, activation checkpointing    (stage 2)
  36k-flex           36,864 tokens: a 384-frame video + text, activation checkpointing              (stage 3)
  16k-flex-nockpt    the 16k row without activation checkpointing (does stage 2 fit without it?)
  4k-sdpa            the 4k row with SDPA and the dense mask (the kernel before FlexAttention)
  4k-flex-compiled, 36k-flex-compiled   + torch.compile of every decoder block (the trainer's `compile`)
then a smoke test of the real trainer on 2 ranks (a tiny model on ShapesWorld; NCCL with 2+ GPUs, else gloo on
the CPU), DDP and FSDP2: 3 steps, a checkpoint, and a resume as one process (on the GPU if there is one).

Each configuration fails (and makes the exit status 1) when it raises (out of memory, a compile error), when
its loss is not finite, or when the attention kernel that ran is not the intended one, as one profiled step
shows it: for "sdpa" a fused SDPA kernel, for "flex" the compiled FlexAttention kernels (uncompiled,
flex_attention runs a dense reference), and on CUDA no call of SDPA's math fallback except the connector's
one-query pooling (the ViT's or the decoder's would store every [heads, L, L] score in fp32). A failed row
keeps whatever numbers were measured. Reported per configuration: the kernel, step time (median of the
timed steps), tokens/s, model TFLOP/s and MFU with nanomolmo2/training/flops.py's count (the trainer's: the
real attention pairs of the row, the head at the loss tokens only, the ViT forward per crop), and peak memory
allocated and reserved (on the CPU: the process's peak RSS).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, report, table  # noqa: E402
from nanomolmo2.data.image_preprocessing import preprocess_image, preprocess_video  # noqa: E402
from nanomolmo2.models import NanoMolmo2  # noqa: E402
from nanomolmo2.models.config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig  # noqa: E402
from nanomolmo2.tokens import (  # noqa: E402
    FRAME_END_ID,
    FRAME_START_ID,
    IGNORE_INDEX,
    IM_END_ID,
    IMAGE_COL_ID,
    IMAGE_END_ID,
    IMAGE_PATCH_ID,
    IMAGE_START_ID,
    LOW_RES_IMAGE_START_ID,
)
from nanomolmo2.training.flops import attention_pairs, batch_flops, peak_flops  # noqa: E402

PROMPT_TOKENS = 20
SDPA_FUSED = (  # profiler names of SDPA's fused kernels (anything but the math fallback)
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
)


@dataclass
class Setting:
    name: str
    seq_len: int
    video_frames: int
    checkpointing: bool
    attention: str = "flex"
    compiled: bool = False
    answer_tokens: int = 200  # per image / video example; the text example filling the row answers 3/4 of itself
    max_filler_answer: int | None = None


FULL = [
    Setting("4k-flex", 4096, 0, False),
    Setting("16k-flex", 16384, 128, True),
    Setting("36k-flex", 36864, 384, True),
    Setting("16k-flex-nockpt", 16384, 128, False),
    Setting("4k-sdpa", 4096, 0, False, attention="sdpa"),
    Setting("4k-flex-compiled", 4096, 0, False, compiled=True),
    Setting("36k-flex-compiled", 36864, 384, True, compiled=True),
]
TINY = [
    Setting("4k-tiny", 256, 0, False, answer_tokens=8, max_filler_answer=8),
    Setting("16k-tiny", 320, 4, True, answer_tokens=8, max_filler_answer=8),
    Setting("36k-tiny", 384, 12, True, answer_tokens=8, max_filler_answer=8),
    Setting("4k-tiny-sdpa", 256, 0, False, attention="sdpa", answer_tokens=8, max_filler_answer=8),
]
# The smoke test's tiny model (the training tests' size) and run, as `--set` overrides of tiny_stage1.
SMOKE = {
    "model.llm.hidden_size": 32, "model.llm.num_layers": 2, "model.llm.num_heads": 2, "model.llm.num_kv_heads": 1,
    "model.llm.head_dim": 16, "model.llm.intermediate_size": 64, "model.vision.image_size": 56,
    "model.vision.hidden_size": 32, "model.vision.num_layers": 2, "model.vision.num_heads": 2,
    "model.vision.intermediate_size": 64, "model.vision.feature_layers": "[-1]", "model.vision.max_crops": 0,
    "model.connector.pool_heads": 2, "model.connector.pool_head_dim": 16, "model.connector.pool_hidden_size": 32,
    "model.connector.projector_hidden_size": 64, "seq_len": 384, "batch_size": 2, "micro_batch_size": 1,
    "num_workers": 0, "save_every": 0, "eval_every": 0, "warmup_connector": 1, "warmup_llm": 1,
}  # fmt: skip


class KernelError(RuntimeError):
    """The attention kernel that ran is not the one intended."""


def model_config(tiny: bool) -> NanoMolmo2Config:
    if not tiny:
        return NanoMolmo2Config()  # Qwen3-0.6B + Molmo2's SigLIP 2 so400m + attention pooling
    vision = VisionConfig.tiny()
    vision.max_crops, vision.overlap_margins = 2, (1, 1)
    return NanoMolmo2Config(llm=LanguageModelConfig.tiny(), vision=vision, connector=ConnectorConfig.tiny())


# ---------------------------------------------------------------------------------------------- batches


def random_ids(n: int, rng: np.random.Generator) -> list[int]:
    return rng.integers(1000, 150000, n).tolist()


def image_example(config: NanoMolmo2Config, answer: int, rng: np.random.Generator) -> dict:
    """One image (480x640 -> global crop + tiles) with a prompt and an answer, laid out as the processor does."""
    vision = config.vision
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    inputs = preprocess_image(
        image, vision.image_size, vision.patch_size, vision.max_crops, vision.overlap_margins,
        config.connector.image_pooling, normalize=False,
    )  # fmt: skip
    low_h, low_w, high_h, high_w = inputs.grid
    vision_ids = [LOW_RES_IMAGE_START_ID] + [IMAGE_PATCH_ID] * (low_h * low_w) + [IMAGE_END_ID]
    vision_ids += [IMAGE_START_ID] + ([IMAGE_PATCH_ID] * high_w + [IMAGE_COL_ID]) * high_h + [IMAGE_END_ID]
    return text_example(PROMPT_TOKENS, answer, rng, vision_ids, inputs.pixel_values, inputs.token_pooling)


def video_example(config: NanoMolmo2Config, frames: int, answer: int, rng: np.random.Generator) -> dict:
    """`frames` frames (a timestamp, then 9x9 pooled patch tokens each), then a question and an answer."""
    pixels = rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8)
    video = preprocess_video(
        pixels, [t / 2 for t in range(frames)], config.vision.image_size, config.vision.patch_size,
        config.connector.video_pooling, normalize=False,
    )  # fmt: skip
    _, rows, cols = video.grid
    vision_ids = []
    for _ in range(frames):
        vision_ids += random_ids(3, rng) + [FRAME_START_ID] + [IMAGE_PATCH_ID] * (rows * cols) + [FRAME_END_ID]
    return text_example(PROMPT_TOKENS, answer, rng, vision_ids, video.pixel_values, video.token_pooling)


def text_example(prompt: int, answer: int, rng, vision_ids=(), pixels=None, pooling=None) -> dict:
    ids = [IM_END_ID] + list(vision_ids) + random_ids(prompt, rng)
    answer_ids = random_ids(answer, rng)
    return {
        "ids": ids + answer_ids,
        "labels": [IGNORE_INDEX] * len(ids) + answer_ids,
        "vision": [False] + [True] * len(vision_ids) + [False] * (prompt + answer),
        "pixels": pixels,
        "pooling": pooling,
    }


def packed_row(config: NanoMolmo2Config, setting: Setting, seed: int = 0) -> dict:
    """Image examples, then the video (its features come after all images', as in the model), then one text
    example filling the rest; each example its own segment with positions restarting at 0."""
    rng = np.random.default_rng(seed)
    video = video_example(config, setting.video_frames, setting.answer_tokens, rng) if setting.video_frames else None
    room = setting.seq_len - (len(video["ids"]) if video else 0)
    examples = []
    while True:
        example = image_example(config, setting.answer_tokens, rng)
        if len(example["ids"]) > room - 16 or (video and setting.video_frames > 128):
            break
        examples.append(example)
        room -= len(example["ids"])
    if video:
        examples.append(video)
        room = setting.seq_len - sum(len(e["ids"]) for e in examples)
    if room < 8:
        raise ValueError(f"{setting.name}: the vision examples do not fit in {setting.seq_len} tokens")
    answer = min(room - 1 - room // 4, setting.max_filler_answer or room)
    examples.append(text_example(room - 1 - answer, answer, rng))
    ids, labels, vision, segments, positions = [], [], [], [], []
    pixels, pooling, offset = [], [], 0
    for i, e in enumerate(examples):
        ids += e["ids"]
        labels += e["labels"]
        vision += e["vision"]
        segments += [i] * len(e["ids"])
        positions += list(range(len(e["ids"])))
        if e["pixels"] is not None:
            pooling.append(torch.where(e["pooling"] >= 0, e["pooling"] + offset, -1))
            pixels.append(e["pixels"])
            offset += e["pixels"].shape[0] * e["pixels"].shape[1]
    width = max(p.shape[1] for p in pooling)
    pooling = [F.pad(p, (0, width - p.shape[1]), value=-1) for p in pooling]
    labels = torch.tensor([labels])
    batch = {
        "input_ids": torch.tensor([ids]),
        "labels": labels,
        "loss_positions": (labels[:, 1:] != IGNORE_INDEX).nonzero(),  # as the collator gives them
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "mm_token_type_ids": torch.tensor([vision]).long(),
        "segment_ids": torch.tensor([segments]),
        "position_ids": torch.tensor([positions]),
        "pixel_values": torch.cat(pixels),  # uint8, as training moves them
        "image_token_pooling": torch.cat(pooling),
    }
    assert batch["input_ids"].shape[1] == setting.seq_len, batch["input_ids"].shape
    return batch


# ---------------------------------------------------------------------------------------------- one configuration


def build_model(config: NanoMolmo2Config, device: torch.device, dtype: torch.dtype | None):
    with device:
        model = NanoMolmo2(config)
    model.vision.freeze()
    if dtype == torch.bfloat16:
        model.vision.to(torch.bfloat16)  # as the trainer holds a frozen ViT
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.0, fused=True)
    return model, optimizer, params


def train_step(model, optimizer, params, batch: dict, dtype: torch.dtype | None) -> float:
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = model(**batch, z_loss_weight=1e-4, return_logits=False).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()  # also a device sync


def events_of_one_step(step) -> tuple[set[str], list[list]]:
    """Names of the ops and kernels the profiler sees during `step()`, and the input shapes of every call of
    SDPA's math kernel."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, record_shapes=True) as prof:
        step()
    events = prof.events()
    math_calls = [e.input_shapes for e in events if e.name == "aten::_scaled_dot_product_attention_math"]
    return {e.name for e in events}, math_calls


def attention_kernel(names: set[str], math_calls: list[list], attention: str, device: torch.device) -> str:
    """The decoder's attention kernel, read from the profiler's events; KernelError if it is not `attention`, or
    if SDPA fell back to its math kernel (it stores every [heads, L, L] score in fp32) anywhere but the
    connector's pooling, whose single query per window makes that harmless."""
    long_math = [shapes[0] for shapes in math_calls if shapes and len(shapes[0]) == 4 and shapes[0][2] > 1]
    if device.type == "cuda" and long_math:
        raise KernelError(f"SDPA ran its math kernel on queries of shape {long_math[0]} (x{len(long_math)})")
    if attention == "flex":
        flex = sorted(n for n in names if "flex" in n.lower() and not n.startswith(("aten::", "torch::")))
        # Compiled, Inductor names the kernels after the op (triton_tem_fused_flex_attention_...); Triton
        # templates are used for nothing else here. Uncompiled flex would run dense aten ops instead.
        compiled = [n for n in flex if n.startswith("triton")] or sorted(n for n in names if "triton_tem" in n)
        if device.type == "cuda" and not compiled:
            raise KernelError(f"no compiled FlexAttention kernel ran (flex-related events: {flex[:5]})")
        return f"flex ({(compiled or flex or ['eager'])[0][:40]})"
    fused = sorted(n.removeprefix("aten::_scaled_dot_product_") for n in names if n in SDPA_FUSED)
    if not fused:
        raise KernelError(f"no fused SDPA kernel ran (SDPA events: {sorted(n for n in names if 'dot_product' in n)})")
    return "sdpa (" + ", ".join(fused) + ")"


def set_compiled(model: NanoMolmo2, compiled: bool) -> None:
    for block in model.llm.layers:
        if compiled:
            block.compile()
        else:
            block._compiled_call_impl = None  # back to eager


def run_setting(setting, model, optimizer, params, config, device, dtype, args, deadline, result) -> None:
    """One configuration: warm-up, timed steps, one profiled step; fills `result` as it goes (so a failure keeps
    whatever was measured), raises on a failure."""
    if setting.name == args.fail_config:
        raise RuntimeError(f"failure injected by --fail-config {setting.name}")
    host = packed_row(config, setting)
    batch = {k: v.to(device, non_blocking=True) for k, v in host.items()}
    attention = setting.attention if device.type == "cuda" else "sdpa"  # no FlexAttention backward on CPU
    flops = batch_flops(config, host)
    tokens = host["input_ids"].numel()
    pairs = attention_pairs(tuple(host["input_ids"].shape), host["segment_ids"], None, host["mm_token_type_ids"] > 0)
    result.update(crops=host["pixel_values"].shape[0], loss_tokens=host["loss_positions"].shape[0])
    result.update(mean_context=pairs / tokens, kernel=attention)
    model.llm.gradient_checkpointing = setting.checkpointing
    model.llm.attention = attention
    set_compiled(model, setting.compiled)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.warmup):
        train_step(model, optimizer, params, batch, dtype)
    result["warmup_s"] = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        if times and time.perf_counter() + times[-1] > deadline:
            break
        start = time.perf_counter()
        loss = train_step(model, optimizer, params, batch, dtype)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = peak_flops(device)
    result.update(steps=len(times), s_per_step=seconds, tokens_per_s=tokens / seconds, loss=loss)
    result.update(tflops=flops / seconds / 1e12, mfu=flops / seconds / peak if peak else None)
    names, math_calls = events_of_one_step(lambda: train_step(model, optimizer, params, batch, dtype))
    if device.type == "cuda":
        result.update(alloc_gib=torch.cuda.max_memory_allocated() / 2**30)
        result.update(reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
    else:
        result.update(alloc_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, reserved_gib=None)
    result["kernel"] = attention_kernel(names, math_calls, attention, device)
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss {loss}")


# ---------------------------------------------------------------------------------------------- 2-rank smoke test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(nproc: int, data: Path, out: Path, overrides: dict) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
    ]
    command += ["-m", "nanomolmo2.train", "--config", "tiny_stage1", "--data", str(data), "--out-dir", str(out)]
    return command + [f"--set={k}={v}" for k, v in overrides.items()]


def logged_steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def smoke_test(mode: str, data: Path, folder: Path, end: float) -> dict:
    """2 ranks x 3 steps of the real trainer with `mode` ("ddp" / "fsdp"), its final checkpoint, then 1 more step
    resumed from it by a single process. Raises on a failure."""
    two_gpus = torch.cuda.device_count() >= 2
    env = dict(
        os.environ, OMP_NUM_THREADS="2", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    ranks_env = env if two_gpus else dict(env, CUDA_VISIBLE_DEVICES="")  # one GPU cannot host 2 NCCL ranks
    out = folder / mode
    result = {"where": "2 GPUs, NCCL" if two_gpus else "2 CPU ranks, gloo"}
    for what, nproc, overrides, process_env in (
        ("2 ranks", 2, {**SMOKE, "distributed": mode, "max_steps": 3}, ranks_env),
        ("resume", 1, {**SMOKE, "distributed": mode, "max_steps": 4, "resume_from": out}, env),
    ):
        start = time.perf_counter()
        command = train_command(nproc, data, out, overrides)
        timeout = max(10.0, min(150.0, end - start))  # each launch, and the whole run, within the time limit
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=process_env, cwd=ROOT)
        result[f"{what} s"] = time.perf_counter() - start
        if run.returncode:  # the ranks' own errors, not torchrun's summary
            errors = [line for line in run.stderr.splitlines() if "Error" in line and "ChildFailed" not in line]
            raise RuntimeError(f"{what}: exit status {run.returncode}: {' | '.join(errors[-3:]) or run.stderr[-1500:]}")
        if what == "2 ranks":
            checkpoint = out / "checkpoints" / "step_3"
            if not (checkpoint / "rng_rank1.pt").is_file():
                raise RuntimeError(f"{checkpoint} has no RNG state of rank 1")
            if mode == "ddp":
                from safetensors import safe_open

                with safe_open(checkpoint / "model.safetensors", "pt") as f:
                    if any(k.startswith("module.") for k in f.keys()):
                        raise RuntimeError("the DDP checkpoint's keys start with 'module.'")
    steps = logged_steps(out)
    if [m["step"] for m in steps] != [1, 2, 3, 4] or not all(math.isfinite(m["loss"]) for m in steps):
        raise RuntimeError(f"expected finite losses at steps 1-4, got {[(m['step'], m['loss']) for m in steps]}")
    result["losses"] = [round(m["loss"], 4) for m in steps]
    return result


def run_smoke_tests(end: float, modes: tuple[str, ...] = ("ddp", "fsdp")) -> list[dict]:
    """The smoke test of each mode, each launch stopped at `end` (a time.perf_counter() value) at the latest."""
    from nanomolmo2.shapesworld.images import write_shapesworld

    rows = []
    with tempfile.TemporaryDirectory(prefix="nanomolmo2-smoke-") as tmp:
        data = Path(tmp) / "data"
        write_shapesworld(data, num_images=24, seed=0, image_size=56)
        for mode in modes:
            row = {"name": f"smoke-{mode}", "status": "ok"}
            try:
                row.update(smoke_test(mode, data, Path(tmp), end))
            except Exception as error:  # report it, go on
                row["status"] = f"FAILED: {type(error).__name__}: {str(error)[-600:]}"
            print(f"{row['name']}: {row}", flush=True)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (runs on a CPU), nothing appended")
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2, tiny 0)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 4, tiny 1)")
    parser.add_argument("--time-limit", type=float, default=560.0, help="seconds for everything (default 560)")
    parser.add_argument("--no-smoke", action="store_true", help="skip the 2-rank smoke test")
    parser.add_argument("--smoke", default="ddp,fsdp", help="the smoke tests' modes (default: ddp,fsdp)")
    parser.add_argument("--fail-config", default="", help="a configuration name made to fail (tests the exit status)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args()
    args.warmup = args.warmup if args.warmup is not None else 0 if args.tiny else 2
    args.steps = args.steps if args.steps is not None else 1 if args.tiny else 4
    begin = time.perf_counter()
    smoke_budget = 0 if args.no_smoke else 200  # seconds kept for the smoke test
    deadline = begin + args.time_limit - smoke_budget
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else None  # fp32 on CPU
    config = model_config(args.tiny)
    settings = [s for s in (TINY if args.tiny else FULL) if not args.only or s.name in args.only.split(",")]
    print(machine(), flush=True)
    model, optimizer, params = build_model(config, device, dtype)
    results = []
    for setting in settings:
        result = {"name": setting.name, "checkpointing": setting.checkpointing, "compiled": setting.compiled}
        results.append(result)
        left = deadline - time.perf_counter()
        if left < (0 if args.tiny else 150 if setting.compiled else 60):
            result["status"] = f"skipped: {left:.0f} s left"
            print(f"skipped {setting.name}: {left:.0f} s left", flush=True)
            continue
        try:
            run_setting(setting, model, optimizer, params, config, device, dtype, args, deadline, result)
            result["status"] = "ok"
        except Exception as error:  # an OOM, a compile failure, the wrong kernel: report it and go on
            kind = "out of memory" if isinstance(error, torch.OutOfMemoryError) else type(error).__name__
            result["status"] = f"FAILED: {kind}: {str(error)[:300]}"
            traceback.print_exc(limit=3)
        finally:
            optimizer.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"{setting.name}: {result['status']}", flush=True)
    del model, optimizer, params
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the smoke test's processes may use this GPU
    smoke = [] if args.no_smoke else run_smoke_tests(begin + args.time_limit, tuple(args.smoke.split(",")))

    header = ["config", "attention kernel", "act. ckpt", "compiled", "crops", "loss tokens", "mean context", "steps",
              "warm-up s", "s/step", "tokens/s", "model TFLOP/s", "MFU", "peak alloc GiB", "peak reserved GiB",
              "loss", "status"]  # fmt: skip
    keys = ["name", "kernel", "checkpointing", "compiled", "crops", "loss_tokens", "mean_context", "steps", "warmup_s",
            "s_per_step", "tokens_per_s", "tflops", "mfu", "alloc_gib", "reserved_gib", "loss", "status"]  # fmt: skip
    rows = [[_cell(r.get(k)) for k in keys] for r in results]
    rows += [[r["name"], r.get("where", ""), *[""] * 14, r["status"]] for r in smoke]
    failed = [r["name"] for r in results + smoke if r["status"].startswith("FAILED")]
    model_name = "Tiny model (CPU smoke test)" if args.tiny else "Qwen3-0.6B + Molmo2's SigLIP 2 so400m (25 blocks)"
    notes = (
        f"{model_name}, random weights, {'bf16 autocast' if dtype else 'fp32'}, frozen ViT, fused AdamW, one packed "
        f"row per step; total {time.perf_counter() - begin:.0f} s. MFU = model FLOPs (nanomolmo2/training/flops.py, "
        f"as the trainer counts them) / s / device peak. Smoke tests: {[(r['name'], r.get('losses')) for r in smoke]}."
        f" {'FAILED: ' + ', '.join(failed) if failed else 'Every configuration ok.'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"configs": results, "smoke": smoke, "failed": failed}, default=str))
    if args.tiny or args.no_append:
        print(f"{table(header, rows)}\n{notes}")
    else:
        report("GPU training throughput (bench/gpu.py)", header, rows, notes)
    return 1 if failed else 0


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


if __name__ == "__main__":
    sys.exit(main())
