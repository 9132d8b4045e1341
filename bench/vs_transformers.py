"""nanoMolmo2 against Hugging Face transformers on this CPU: same weights, same batch, one process.

    python bench/vs_transformers.py [--repeats 5] [--layers 6] [--threads N] [--only sft,vlm,generate,preprocess]
    python bench/vs_transformers.py --quick   # minimal sizes, 1 repeat, nothing appended (the test runs this)

Results are printed and appended to bench/RESULTS.md (--no-append: printed only). On a machine shared with
other jobs, `--threads 1` gives steadier numbers: with every core busy, two OpenMP threads turn each small
operation into a wait for a descheduled thread (seen here: a 256-wide MLP on one token, 0.2 ms -> 14 ms).

What is measured (fp32, fused AdamW(betas 0.9/0.95, eps 1e-6, no weight decay) on both sides):
  sft        one SFT training step of the language model alone (forward + backward + AdamW): Qwen3 at 1/4 of
             0.6B's width (hidden 256, 8 q / 4 kv heads of 64, FFN 768; `--layers` blocks, default 6), the full
             151,936-token vocabulary, tied embeddings, batch 4 x 512 with the loss on the last quarter of every
             row (labels -100 elsewhere). Ours: LanguageModel loaded by our loader from the folder that
             transformers' Qwen3ForCausalLM saved.
  vlm        one nanoMolmo2 training step, vision encoder frozen: a random Molmo2 at 1/4 width (the LLM above,
             untied head; a 288-wide ViT, 4 heads of 72, MLP 1076, 8 blocks, features of blocks 7 and 3 as
             Molmo2 reads 24 and 18; 378-px crops, 2x2 attention pooling), on a batch of two real photos cut
             by our processor (5 crops each) with a ~200-token answer. Ours: NanoMolmo2.from_pretrained on the
             folder transformers' Molmo2ForConditionalGeneration saved; its vision tower is frozen too.
  generate   greedy decoding of 64 tokens with the KV cache after one image prompt, with the vlm model:
             NanoMolmo2.generate (with the screened head of nanomolmo2/eval/screened_head.py, as the
             nanomolmo2 commands decode) against transformers' generate, both fp32; the tokens must be the same.
             Prefill (vision encoder + prompt, measured as a 1-token generation) and end-to-end tokens/s =
             64 / time of the whole call.
  preprocess one real photo (those of tests/data/media.py, decoded beforehand) -> crops, patches, pooling:
             our Processor.preprocess against transformers' Molmo2ImageProcessor, which needs torchvision and
             so runs in .venv-ref (bench/transformers_preprocess.py, a long-lived subprocess fed one round at
             a time, so the two sides still alternate); per-image medians.

Timing: both implementations live in one process; after a warm-up call each, they alternate (ours, theirs,
then theirs, ours, ...) `--repeats` times; medians are reported, speed-up = transformers time / ours. `--clock cpu`
times the process's CPU time instead of the wall clock: on a machine busy with other jobs it leaves out the time
they hold the core (with one thread: the wall time less those waits; contention for memory and caches still counts).
Peak memory: torch allocates outside Python's allocator, so tracemalloc sees nothing. Each implementation
runs in its own fresh process (this script with --worker): after the model and batch are loaded, freed heap
is returned to the OS (malloc_trim), the kernel's peak-RSS mark is reset (/proc/self/clear_refs = 5), two
steps run, and peak RSS (VmHWM) minus the RSS before them is reported: gradients, AdamW state, activations,
logits and allocator overhead, everything the step adds on top of the loaded weights. (Without
clear_refs, ru_maxrss is used and the number then includes loading: the notes say so.) --quick measures
only our side of the first benchmark, to check that this path runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report, table  # noqa: E402

BENCHMARKS = ("sft", "vlm", "generate", "preprocess")
IMPLS = ("ours", "transformers")
# wall: elapsed time. cpu: the process's CPU time, which leaves out the time other jobs hold the core (with one
# thread: the wall time less those waits); contention for memory bandwidth and caches still counts.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
GOALS = {"sft": "speed >= 1.5x, memory <= 0.7x", "vlm": "speed >= 1.5x", "generate": "tokens/s >= 1.5x"}
PROMPT = "<|im_start|>user\n<|image|>Describe this image.<|im_end|>\n<|im_start|>assistant\n"
ANSWER = (
    "The photo shows a wide scene in daylight. In the foreground there are several objects with clear edges "
    "and bright colours; behind them a building with a sloping roof stands among green trees. "
) * 3


@dataclass
class Sizes:
    """Model and batch sizes; `quick()` is the minimal version the test runs."""

    hidden: int = 256
    heads: int = 8
    kv_heads: int = 4
    head_dim: int = 64
    ffn: int = 768
    layers: int = 6
    batch: int = 4
    seq: int = 512
    vit_hidden: int = 288
    vit_heads: int = 4
    vit_ffn: int = 1076
    vit_layers: int = 8
    crop: int = 378
    overlap: tuple[int, int] = (4, 4)
    max_crops: int = 8
    photos: tuple[str, ...] = ("china", "flower")
    new_tokens: int = 64
    answer: str = ANSWER

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, layers=1, batch=1, seq=64,
            vit_hidden=32, vit_heads=4, vit_ffn=64, vit_layers=2, crop=112, overlap=(2, 2), max_crops=2,
            new_tokens=4, answer="A short answer.",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- models


def qwen3_config(s: Sizes, tie: bool = True) -> dict:
    return dict(
        vocab_size=151936,
        hidden_size=s.hidden,
        intermediate_size=s.ffn,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        head_dim=s.head_dim,
        tie_word_embeddings=tie,
        rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0),
    )


def save_reference(name: str, s: Sizes, folder: Path) -> None:
    """Write a random-weight transformers model to `folder` (both sides then load it from there)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    if name == "sft":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**qwen3_config(s)))
    else:
        width = dict(
            num_attention_heads=s.vit_heads, num_key_value_heads=s.vit_heads, head_dim=s.vit_hidden // s.vit_heads
        )
        config = transformers.Molmo2Config(
            vision_config=dict(
                hidden_size=s.vit_hidden,
                intermediate_size=s.vit_ffn,
                num_hidden_layers=s.vit_layers,
                image_size=[s.crop, s.crop],
                patch_size=14,
                **width,
            ),
            adapter_config=dict(
                vision_feature_layer=[-1, -1 - s.vit_layers // 2],
                hidden_size=s.vit_hidden,
                intermediate_size=s.ffn,
                text_hidden_size=s.hidden,
                **width,
            ),
            text_config=dict(qwen3_config(s, tie=False), additional_vocab_size=128),
        )
        model = transformers.Molmo2ForConditionalGeneration(config)
    model.save_pretrained(folder)


def load_model(name: str, impl: str, folder: Path) -> torch.nn.Module:
    """The model of benchmark `name` (sft: a Qwen3 LM; vlm / generate: a Molmo2) from `folder`."""
    if impl == "ours":
        from nanomolmo2.models import LanguageModel, NanoMolmo2

        model = LanguageModel.from_pretrained(folder) if name == "sft" else NanoMolmo2.from_pretrained(folder)
        if name != "sft":
            model.vision.freeze()
        return model
    import transformers

    transformers.logging.set_verbosity_error()
    cls = transformers.Qwen3ForCausalLM if name == "sft" else transformers.Molmo2ForConditionalGeneration
    model = cls.from_pretrained(folder, dtype=torch.float32)
    if name != "sft":
        model.model.vision_tower.requires_grad_(False).eval()
    return model


def adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.0, fused=True)


# ---------------------------------------------------------------------------------------------- batches


def sft_batch(s: Sizes) -> dict:
    ids = torch.randint(0, 151643, (s.batch, s.seq), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, : s.seq - s.seq // 4] = -100  # loss on the answer quarter only
    return {"input_ids": ids, "labels": labels}


@functools.cache
def processor_for(crop: int, overlap: tuple[int, int], max_crops: int):
    """Our processor (its tokenizer takes a moment to load: one per process)."""
    from nanomolmo2.data.processor import Processor

    return Processor(crop_size=crop, overlap_margins=overlap, max_crops=max_crops)


def vlm_examples(s: Sizes, with_answer: bool) -> list[dict]:
    """One processor output per photo (same size photos: same token layout), labels on the answer."""
    from tests.data.media import real_photos

    processor = processor_for(s.crop, s.overlap, s.max_crops)
    photos = real_photos()
    examples = []
    for name in s.photos:
        prompt = processor(PROMPT, [photos[name]])
        if not with_answer:
            examples.append(prompt)
            continue
        full = processor(PROMPT + s.answer + "<|im_end|>", [photos[name]])
        full["labels"] = full["input_ids"].clone()
        full["labels"][:, : prompt["input_ids"].shape[1]] = -100
        examples.append(full)
    return examples


def vlm_batch(s: Sizes) -> dict:
    """The examples stacked into one batch; each pooling index shifts past the crops before it."""
    examples = vlm_examples(s, with_answer=True)
    lengths = {e["input_ids"].shape[1] for e in examples}
    assert len(lengths) == 1, f"photos of one batch must give equal lengths, got {lengths}"
    batch = {k: torch.cat([e[k] for e in examples]) for k in examples[0] if k != "image_token_pooling"}
    offset, pooling = 0, []
    for e in examples:
        pooling.append(torch.where(e["image_token_pooling"] >= 0, e["image_token_pooling"] + offset, -1))
        offset += e["pixel_values"].shape[0] * e["pixel_values"].shape[1]
    batch["image_token_pooling"] = torch.cat(pooling)
    return batch


# ---------------------------------------------------------------------------------------------- steps


def make_steps(name: str, impl: str, folder: Path, s: Sizes) -> dict:
    """{label: callable} for one implementation; each call does one unit of work and returns a check value."""
    from nanomolmo2.eval.screened_head import greedy_head

    model = load_model(name, impl, folder)
    if name in ("sft", "vlm"):
        batch = sft_batch(s) if name == "sft" else vlm_batch(s)
        optimizer = adamw(model)
        model.train()
        if impl == "transformers" and name == "vlm":
            model.model.vision_tower.eval()
        extra = {"return_logits": False} if impl == "ours" else {}

        def step() -> float:
            loss = model(**batch, **extra).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

        return {"step": step}
    model.eval()
    inputs = vlm_examples(s, with_answer=False)[0]
    prompt_len = inputs["input_ids"].shape[1]
    # Ours decodes as nanoMolmo2's commands do: greedy through the screened head (exact: the fp32 head's argmax),
    # built once per model like theirs (~0.4 s here, outside the timing).
    head = greedy_head(model) if impl == "ours" else None

    def generate(n: int):
        def call() -> list[int]:
            if impl == "ours":
                return model.generate(**inputs, max_new_tokens=n, eos_token_id=-1, greedy_head=head)[0].tolist()
            out = model.generate(**inputs, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
            return out[0, prompt_len:].tolist()

        return call

    return {"prefill": generate(1), "generate": generate(s.new_tokens)}


def time_alternating(steps: dict[str, dict], repeats: int, clock=time.perf_counter) -> tuple[dict, dict]:
    """Median seconds per (impl, label), alternating implementations; plus each call's first return value."""
    times = {impl: {label: [] for label in steps[impl]} for impl in steps}
    checks = {impl: {label: fn() for label, fn in steps[impl].items()} for impl in steps}  # warm-up
    order = list(steps)
    for r in range(repeats):
        for impl in order if r % 2 == 0 else order[::-1]:
            for label, fn in steps[impl].items():
                start = clock()
                fn()
                times[impl][label].append(clock() - start)
    medians = {impl: {label: statistics.median(t) for label, t in labels.items()} for impl, labels in times.items()}
    return medians, checks


# ---------------------------------------------------------------------------------------------- memory


def _status_mib(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field_name)


def _reset_peak_rss() -> bool:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(name: str, impl: str, folder: Path, s: Sizes) -> None:
    """In a fresh process: peak RSS of two calls of the benchmark's main step above the loaded state."""
    import resource

    steps = make_steps(name, impl, folder, s)
    fn = steps["step" if "step" in steps else "generate"]
    base = _status_mib("VmRSS")
    exact = _reset_peak_rss()
    base = min(base, _status_mib("VmRSS"))
    for _ in range(2):
        fn()
    peak = _status_mib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mib": base, "peak_mib": peak, "step_mib": peak - base, "exact": exact}))


def measure_memory(name: str, impl: str, folder: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--impl", impl, "--folder", str(folder)]
    command += ["--layers", str(args.layers), "--threads", str(torch.get_num_threads())]
    command += ["--quick"] if args.quick else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"memory worker {name}/{impl} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- preprocessing


def preprocess_rows(repeats: int, s: Sizes, photo_names: list[str] | None) -> tuple[list[list], str]:
    """Per photo: median ms of ours and of transformers (in .venv-ref), rounds alternating between the two;
    and the reference environment's torch version."""
    from nanomolmo2.data.image_preprocessing import load_image
    from tests.data.media import real_photos

    photos = {k: v for k, v in real_photos().items() if photo_names is None or k in photo_names}
    images = {}
    for name, path in photos.items():
        image = load_image(path)
        image.load()  # decoded once, outside the timing, for both sides
        images[name] = image
    processor = processor_for(s.crop, s.overlap, s.max_crops)
    ref_python = ROOT / ".venv-ref" / "bin" / "python"
    worker_script = ROOT / "bench" / "transformers_preprocess.py"
    command = [str(ref_python), str(worker_script), str(torch.get_num_threads()), str(s.crop), str(s.max_crops)]
    command += [str(s.overlap[0]), str(s.overlap[1]), *(f"{k}={v}" for k, v in photos.items())]
    ours = {name: [] for name in images}
    theirs = {name: [] for name in images}
    crops = {}
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as ref:
        ready = json.loads(ref.stdout.readline())  # after its imports and one warm-up pass
        ref_version = ready["torch"]
        for name, image in images.items():
            crops[name] = processor.preprocess(image).pixel_values.shape[0]  # warm-up
            if crops[name] != ready["crops"][name]:
                raise RuntimeError(f"{name}: ours {crops[name]} crops, transformers {ready['crops'][name]}")
        for _ in range(repeats):
            for name, image in images.items():
                start = time.perf_counter()
                processor.preprocess(image)
                ours[name].append(time.perf_counter() - start)
            ref.stdin.write("run\n")
            ref.stdin.flush()
            for name, seconds in json.loads(ref.stdout.readline()).items():
                theirs[name].append(seconds)
        ref.stdin.close()
    rows = []
    for name, image in images.items():
        a, b = statistics.median(ours[name]) * 1e3, statistics.median(theirs[name]) * 1e3
        size = f"{image.width}x{image.height} {image.mode}"
        rows.append([name, size, crops[name], a, b, b / a])
    return rows, ref_version


# ---------------------------------------------------------------------------------------------- main


def model_rows(name: str, tmp: Path, args: argparse.Namespace, s: Sizes) -> tuple[list[list], str]:
    kind = "sft" if name == "sft" else "vlm"  # generate reuses the vlm model
    folder = tmp / kind
    if not folder.exists():
        save_reference(kind, s, folder)
    steps = {impl: make_steps(name, impl, folder, s) for impl in IMPLS}
    medians, checks = time_alternating(steps, args.repeats, CLOCKS[args.clock])
    del steps
    # --quick measures our side of the first benchmark only: a check that the worker path runs.
    sides = () if args.no_memory else ("ours",) if args.quick else IMPLS
    memory = {impl: measure_memory(name, impl, folder, args) for impl in sides}
    mem = [memory[impl]["step_mib"] if impl in memory else "-" for impl in IMPLS]
    mem_ratio = mem[0] / mem[1] if len(memory) == 2 else "-"
    ours, theirs = medians["ours"], medians["transformers"]
    if name == "generate":
        n = s.new_tokens
        decode = {impl: medians[impl]["generate"] - medians[impl]["prefill"] for impl in IMPLS}
        decode_rate = [(n - 1) / d if d > 0 else "-" for d in decode.values()]  # noise can beat a tiny decode
        rows = [
            ["generate: prefill (image + prompt, 1 token)", "s", ours["prefill"], theirs["prefill"],
             theirs["prefill"] / ours["prefill"], "-", "-", "-", ""],
            [f"generate: {n} tokens, end to end", "tokens/s", n / ours["generate"], n / theirs["generate"],
             theirs["generate"] / ours["generate"], *mem, mem_ratio, GOALS[name]],
            [f"generate: decode only ({n - 1} tokens after the first)", "tokens/s", *decode_rate,
             decode["transformers"] / decode["ours"] if "-" not in decode_rate else "-", "-", "-", "-", ""],
        ]  # fmt: skip
        same = checks["ours"]["generate"] == checks["transformers"]["generate"]
        note = f"generate: greedy tokens identical to transformers' = {same}"
    else:
        label = {"sft": "SFT step, Qwen3 LM alone", "vlm": "nanoMolmo2 step, ViT frozen"}[name]
        rows = [[label, "s/step", ours["step"], theirs["step"], theirs["step"] / ours["step"], *mem, mem_ratio,
                 GOALS[name]]]  # fmt: skip
        a, b = checks["ours"]["step"], checks["transformers"]["step"]
        note = f"{name}: first-step loss ours {a:.6f}, transformers {b:.6f}"
    if memory and not all(m["exact"] for m in memory.values()):
        note += " (peak memory from ru_maxrss: includes loading)"
    return rows, note


def describe(s: Sizes, args: argparse.Namespace) -> str:
    return (
        f"LM: Qwen3 hidden {s.hidden}, {s.heads} q / {s.kv_heads} kv heads x {s.head_dim}, FFN {s.ffn}, "
        f"{s.layers} layers, vocab 151,936; sft batch {s.batch} x {s.seq}, loss on the last {s.seq // 4} of each row. "
        f"ViT {s.vit_hidden} wide, {s.vit_heads} heads, MLP {s.vit_ffn}, {s.vit_layers} blocks, {s.crop}-px crops; "
        f"vlm batch = photos {', '.join(s.photos)}. Medians of {args.repeats} alternating repeats ({args.clock} "
        "clock); speed-up = "
        "transformers time / ours; peak MiB = peak RSS a step adds above the loaded model, one fresh process per "
        f"side; memory ratio = ours / transformers. CPU: {cpu_model()}, {torch.get_num_threads()} torch threads; "
        "load average before the run: "
        f"{os.getloadavg()[0]:.2f}."
    )


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=6, help="decoder blocks of the 1/4-width Qwen3")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + str(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="minimal sizes, 1 repeat, results not appended")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, both sides (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall", help="cpu: this process's CPU time (waits for a busy CPU left out)"
    )
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to bench/RESULTS.md")
    parser.add_argument("--worker", choices=BENCHMARKS, help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes(layers=args.layers)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args.worker, args.impl, args.folder, sizes)
    if args.quick:
        args.repeats, args.no_append = 1, True
    only = [b for b in args.only.split(",") if b]
    if unknown := set(only) - set(BENCHMARKS):
        parser.error(f"unknown benchmarks {sorted(unknown)}")
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in (b for b in BENCHMARKS if b in only and b != "preprocess"):
            if args.quick and rows:
                args.no_memory = True
            new_rows, note = model_rows(name, Path(tmp), args, sizes)
            rows += new_rows
            notes.append(note)
            print(table(["benchmark", "unit", "ours", "transformers", "speed-up"], [r[:5] for r in new_rows]))
    header = ["benchmark", "unit", "ours", "transformers", "speed-up", "peak MiB ours", "peak MiB transformers",
              "memory ratio", "goal"]  # fmt: skip
    publish = print_only if args.no_append else report
    if rows:
        publish("nanoMolmo2 vs transformers: training and generation", header, rows, describe(sizes, args)
                + "\n" + "; ".join(notes))  # fmt: skip
    if "preprocess" in only:
        photo_names = list(sizes.photos) if args.quick else None
        rounds = 1 if args.quick else 4 * args.repeats  # cheap, and small timings are noisy
        pre_rows, ref_version = preprocess_rows(rounds, sizes, photo_names)
        ratios = [r[-1] for r in pre_rows]
        pre_rows.append(["all (median of ratios)", "", "", "", "", statistics.median(ratios)])
        publish(
            "nanoMolmo2 vs transformers: image preprocessing (decoded photo -> crops, patches, pooling)",
            ["photo", "size", "crops", "ours ms", "transformers ms", "speed-up"],
            pre_rows,
            f"Per-image medians of {rounds} alternating rounds; transformers' Molmo2ImageProcessor runs in "
            f".venv-ref (torch {ref_version}), ours here, both with {torch.get_num_threads()} threads; "
            "goal speed-up >= 1.",
        )


def print_only(title: str, header: list[str], rows: list[list], notes: str = "") -> None:
    print(f"## {title}\n{table(header, rows)}\n{notes}")


if __name__ == "__main__":
    main()
