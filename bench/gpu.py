"""Training throughput of the real-size nanoMolmo2 on one GPU: tokens/s, MFU and peak memory, eager and compiled.

    python bench/gpu.py                  # on an H100 / H200: about 6-9 minutes, capped by --time-limit (480 s)
    python bench/gpu.py --tiny           # a tiny model on the CPU, to check that the script runs (tests do this)
    python bench/gpu.py --compile off    # eager only; --compile on: compiled only

Model: Qwen3-0.6B (1024 wide, 28 layers, 16 q / 8 kv heads of 128, FFN 3072, vocab 151,936, tied) with
Molmo2's vision encoder at full size (SigLIP 2 so400m/14: 1152 wide, 16 heads, MLP 4304, 378-px crops,
blocks 0..24 built for the features of blocks 24 and 18) and the attention-pooling connector; random weights.
The step is the trainer's (nanomolmo2/training/trainer.py): fp32 master weights, bf16 autocast, ViT frozen,
logits only at the loss positions (chunked when many), z-loss 1e-4, grad clipping, fused AdamW.

Configurations, one packed row each (the stage configs' micro-batches), built like the processor builds them
(real pooling windows and token layouts, random pixels and text ids):
  4k   4,096 tokens of image examples (one 480x640 image = 5 crops, 752 vision tokens, + a 200-token answer)
  16k  16,384 tokens: a 128-frame video (81 tokens per frame) + image examples, activation checkpointing
  36k  36,864 tokens: a 384-frame video + text (stage 3), activation checkpointing
each in eager mode, then with `torch.compile` of every decoder block (the trainer's `compile = true`).

Reported per configuration: step time (median of the timed steps), tokens/s (real tokens), MFU and peak
memory (torch.cuda.max_memory_allocated). MFU = model FLOPs / step time / peak bf16 FLOP/s of the device:
the PaLM / nanochat count of nanomolmo2/training/flops.py (6 x parameters + 12 x layers x heads x head_dim x
context per token, context = the keys each query may attend to, counted from the real mask), except that
the output head is paid only at the loss positions (the only ones where this model computes logits), plus
the frozen ViT's forward (2 x parameters x patches + attention) per crop; recomputation under activation
checkpointing is not counted. Each configuration runs inside try/except (an OOM or a compile error is printed
and the next one runs); configurations that would start after --time-limit are skipped.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, report, table  # noqa: E402
from nanomolmo2.data.image_preprocessing import preprocess_image, preprocess_video  # noqa: E402
from nanomolmo2.models import NanoMolmo2  # noqa: E402
from nanomolmo2.models.attention import build_attention_mask  # noqa: E402
from nanomolmo2.models.config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig  # noqa: E402
from nanomolmo2.tokens import (  # noqa: E402
    FRAME_END_ID,
    FRAME_START_ID,
    IM_END_ID,
    IMAGE_COL_ID,
    IMAGE_END_ID,
    IMAGE_PATCH_ID,
    IMAGE_START_ID,
    LOW_RES_IMAGE_START_ID,
)
from nanomolmo2.training.flops import llm_flops_per_token, vision_flops_per_crop  # noqa: E402

# Dense bf16 peak FLOP/s (no sparsity) by device-name fragment; the first match wins.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12)]
PROMPT_TOKENS = 20


@dataclass
class Setting:
    name: str
    seq_len: int
    video_frames: int
    checkpointing: bool
    answer_tokens: int = 200  # per image / video example; the text example filling the row answers 3/4 of itself
    max_filler_answer: int | None = None


FULL = [Setting("4k", 4096, 0, False), Setting("16k", 16384, 128, True), Setting("36k", 36864, 384, True)]
TINY = [
    Setting("4k-tiny", 256, 0, False, answer_tokens=8, max_filler_answer=8),
    Setting("16k-tiny", 320, 4, True, answer_tokens=8, max_filler_answer=8),
    Setting("36k-tiny", 384, 12, True, answer_tokens=8, max_filler_answer=8),
]


def model_config(tiny: bool) -> NanoMolmo2Config:
    if not tiny:
        return NanoMolmo2Config()  # Qwen3-0.6B + Molmo2's SigLIP 2 so400m + attention pooling
    vision = VisionConfig.tiny()
    vision.max_crops, vision.overlap_margins = 2, (1, 1)
    return NanoMolmo2Config(llm=LanguageModelConfig.tiny(), vision=vision, connector=ConnectorConfig.tiny())


def peak_bf16_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16 if key in name), None)


# ---------------------------------------------------------------------------------------------- batches


def random_ids(n: int, rng: np.random.Generator) -> list[int]:
    return rng.integers(1000, 150000, n).tolist()


def image_example(config: NanoMolmo2Config, answer: int, rng: np.random.Generator) -> dict:
    """One image (480x640 -> global crop + tiles) with a prompt and an answer, laid out as the processor does."""
    vision = config.vision
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    inputs = preprocess_image(
        image, vision.image_size, vision.patch_size, vision.max_crops, vision.overlap_margins,
        config.connector.image_pooling,
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
        config.connector.video_pooling,
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
        "labels": [-100] * len(ids) + answer_ids,
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
    batch = {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "mm_token_type_ids": torch.tensor([vision]).long(),
        "segment_ids": torch.tensor([segments]),
        "position_ids": torch.tensor([positions]),
        "pixel_values": torch.cat(pixels),
        "image_token_pooling": torch.cat(pooling),
    }
    assert batch["input_ids"].shape[1] == setting.seq_len, batch["input_ids"].shape
    return batch


# ---------------------------------------------------------------------------------------------- FLOPs


def mean_context(batch: dict) -> float:
    """Keys per query under the real mask (causal + the vision block + segments), averaged over the row."""
    mask = build_attention_mask(
        batch["input_ids"].shape[1], batch["input_ids"].shape[1], segment_ids=batch["segment_ids"],
        vision_mask=batch["mm_token_type_ids"] > 0, device=batch["input_ids"].device,
    )  # fmt: skip
    return float(mask.sum()) / batch["input_ids"].numel()


def step_model_flops(config: NanoMolmo2Config, batch: dict, context: float) -> float:
    tokens = batch["input_ids"].numel()
    loss_tokens = int((batch["labels"][:, 1:] != -100).sum())
    head = 6 * config.llm.hidden_size * config.llm.vocab_size  # paid only where the loss is
    crops = batch["pixel_values"].shape[0]
    return (
        tokens * (llm_flops_per_token(config, context) - head)
        + loss_tokens * head
        + crops * vision_flops_per_crop(config, trained=False)
    )


# ---------------------------------------------------------------------------------------------- one configuration


def build_model(config: NanoMolmo2Config, device: torch.device) -> tuple[NanoMolmo2, torch.optim.Optimizer, list]:
    with device:
        model = NanoMolmo2(config)
    model.vision.freeze()
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


def run_setting(setting, compiled, model, optimizer, params, config, device, dtype, args, deadline, rows) -> list:
    """One configuration: warm-up, timed steps, one table row. `rows` caches the packed rows (CPU tensors)."""
    if setting.name not in rows:
        rows[setting.name] = packed_row(config, setting)
    batch = {k: v.to(device) for k, v in rows[setting.name].items()}
    context = mean_context(batch)
    flops = step_model_flops(config, batch, context)
    model.llm.gradient_checkpointing = setting.checkpointing
    if compiled:
        torch._dynamo.reset()  # a fresh compile for this shape (and a measurable compile time)
        for block in model.llm.layers:
            block.compile()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.warmup):
        train_step(model, optimizer, params, batch, dtype)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        if times and time.perf_counter() + times[-1] > deadline:
            break
        start = time.perf_counter()
        loss = train_step(model, optimizer, params, batch, dtype)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = batch["input_ids"].numel()
    peak = peak_bf16_flops()
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else "-"
    return [
        setting.name, "compiled" if compiled else "eager", "yes" if setting.checkpointing else "no",
        batch["pixel_values"].shape[0], int((batch["labels"][:, 1:] != -100).sum()), round(context),
        len(times), warmup_s, seconds, tokens / seconds, flops / seconds / 1e12,
        flops / seconds / peak if peak else "-", memory, round(loss, 3),
    ]  # fmt: skip


def sdpa_backends(device: torch.device) -> str:
    """Which fused SDPA kernels accept the decoder's masked attention (bf16, 16 q heads, head_dim 128):
    k/v repeated to 16 heads (what Attention does with a mask on CUDA) and 8 kv heads with enable_gqa."""
    if device.type != "cuda":
        return ""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 16, 256, 128, device=device, dtype=torch.bfloat16)
    kv8 = torch.randn(1, 8, 256, 128, device=device, dtype=torch.bfloat16)
    mask = torch.ones(256, 256, device=device, dtype=torch.bool).tril()[None, None]
    found = []
    for layout, k, gqa in (("repeated kv", kv8.repeat_interleave(2, 1), False), ("enable_gqa", kv8, True)):
        ok = []
        for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([backend]):
                    F.scaled_dot_product_attention(q, k, k, attn_mask=mask, enable_gqa=gqa)
                ok.append(backend.name)
            except RuntimeError:
                pass
        found.append(f"{layout}: {', '.join(ok) or 'math only'}")
    return "SDPA kernels that take a boolean mask here: " + "; ".join(found) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (runs on a CPU), nothing appended")
    parser.add_argument("--compile", choices=["both", "off", "on"], default=None, help="default: both (tiny: off)")
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2, tiny 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5, tiny 1)")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds; later configurations are skipped")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args()
    args.warmup = args.warmup if args.warmup is not None else 1 if args.tiny else 2
    args.steps = args.steps if args.steps is not None else 1 if args.tiny else 5
    begin = time.perf_counter()
    deadline = begin + args.time_limit
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else None  # fp32 on CPU, as the trainer
    compile_mode = args.compile or ("off" if args.tiny else "both")
    config = model_config(args.tiny)
    settings = [s for s in (TINY if args.tiny else FULL) if not args.only or s.name in args.only.split(",")]
    modes = {"both": [False, True], "off": [False], "on": [True]}[compile_mode]
    backends = sdpa_backends(device)
    print(f"{machine()}; {backends}", flush=True)
    model, optimizer, params = build_model(config, device)
    header = ["config", "mode", "act. ckpt", "crops", "loss tokens", "mean context", "steps", "warm-up s", "s/step",
              "tokens/s", "model TFLOP/s", "MFU", "peak GiB", "loss"]  # fmt: skip
    rows, batches = [], {}
    for compiled in modes:
        for setting in settings:
            left = deadline - time.perf_counter()
            if left < (120 if compiled and not args.tiny else 30 if not args.tiny else 0):
                print(f"skipped {setting.name} ({'compiled' if compiled else 'eager'}): {left:.0f} s left", flush=True)
                continue
            try:
                rows.append(run_setting(setting, compiled, model, optimizer, params, config, device, dtype, args,
                                        deadline, batches))  # fmt: skip
                print(table(header, rows[-1:]), flush=True)
            except Exception as error:  # an OOM or a compile failure: report it and go on
                kind = "out of memory" if isinstance(error, torch.OutOfMemoryError) else type(error).__name__
                print(f"FAILED {setting.name} ({'compiled' if compiled else 'eager'}): {kind}: {str(error)[:300]}")
                traceback.print_exc(limit=3)
                rows.append([setting.name, "compiled" if compiled else "eager", "", "", "", "", 0, "", "", "", "",
                             "", "", f"FAILED: {kind}"])  # fmt: skip
            finally:
                optimizer.zero_grad(set_to_none=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    model_name = "Tiny model (CPU smoke test)" if args.tiny else "Qwen3-0.6B + Molmo2's SigLIP 2 so400m (25 blocks)"
    notes = (
        f"{model_name}, random weights, {'bf16 autocast' if dtype else 'fp32'}, ViT frozen, fused AdamW, one packed "
        f"row per step; total {time.perf_counter() - begin:.0f} s. MFU = model FLOPs (flops.py's count with the head "
        f"at the loss tokens only, + the ViT forward) / s / device peak. {backends}"
    )
    if args.tiny or args.no_append:
        print(f"{table(header, rows)}\n{notes}")
    else:
        report("GPU training throughput (bench/gpu.py)", header, rows, notes)


if __name__ == "__main__":
    main()
