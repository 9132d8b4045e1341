"""How fast would our decoding have to be for generation to reach a speed-up goal over transformers, end to end?

    python bench/decode_floor.py [--threads 1] [--repeats 5] [--goal 1.5]
    python bench/decode_floor.py --quick   # minimal sizes, nothing appended (the test runs this)

The generate benchmark of vs_transformers.py (same random Molmo2, same photo and prompt, fp32, identical greedy
tokens) times one call = prefill (vision encoder + prompt + first token) + (n - 1) decoded tokens. With
transformers' call taking T and our prefill P, a speed-up g end to end leaves our decoding

    budget per token = (T / g - P) / (n - 1)

This script measures T, P and n on both sides (alternating, medians), then the parts of one of our decoded tokens
on their own, after a prompt of the benchmark's length:
  step          one decoder step (embedding, every block with the KV cache, final norm) repeated back to back,
                so its weights and cache stay in the CPU's caches;
  head          the screened greedy head (eval/screened_head.py) repeated back to back;
  step + head   the two in turn, as generation runs them: each evicts the other from the caches;
  step + sweep  a step, then a read of an unrelated tensor as large as the int8 head: the cost of the eviction
                alone, with no head arithmetic.
When even `step` + `head` measured apart (the most favourable case) exceed the budget, the goal cannot be met by
this design in fp32; the table says which part would have to shrink.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from bench.vs_transformers import (  # noqa: E402
    IMPLS,
    Sizes,
    make_steps,
    print_only,
    save_reference,
    time_alternating,
    vlm_examples,
)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def decode_parts(folder: Path, prompt_len: int, repeats: int) -> dict[str, float]:
    """Milliseconds of our decoder step, screened head, both in turn, and a step followed by an equal-size read."""
    from nanomolmo2.eval.screened_head import greedy_head
    from nanomolmo2.models import NanoMolmo2
    from nanomolmo2.models.attention import KVCache

    model = NanoMolmo2.from_pretrained(folder).eval()
    llm = model.llm
    cache = KVCache(model.config.llm, 1, prompt_len + 1)
    token, position = torch.tensor([[5]]), torch.tensor([[prompt_len]])
    with torch.no_grad():
        llm.hidden_states(torch.randn(1, prompt_len, model.config.llm.hidden_size), cache=cache)
        head = greedy_head(model)
        if head is None:
            raise SystemExit("no screened head for this model (a GPU, a restricted vocabulary or a tiny width)")
        sweep = torch.randn(head.int8.numel() // 4)  # as many bytes as the int8 head, in fp32 for a fast sum

        def step() -> torch.Tensor:
            hidden = llm.hidden_states(llm.embed_tokens(token), position_ids=position, cache=cache)
            cache.length -= 1  # the same position again: every step attends over prompt_len + 1 keys
            return hidden[:, -1]

        hidden = step()
        parts = {
            "step": median_ms(step, repeats),
            "head": median_ms(lambda: head(hidden), repeats),
            "step + head": median_ms(lambda: head(step()), repeats),
            "step + sweep": median_ms(lambda: (step(), sweep.sum()), repeats),
        }
        parts["sweep"] = median_ms(lambda: sweep.sum(), repeats)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats of the whole generate call")
    parser.add_argument("--part-repeats", type=int, default=50, help="repeats of each decoding part")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--goal", type=float, default=1.5, help="end-to-end speed-up to budget for")
    parser.add_argument("--quick", action="store_true", help="minimal sizes, 1 repeat, results not appended")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.quick:
        args.repeats, args.part_repeats = 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vlm"
        save_reference("vlm", sizes, folder)
        steps = {impl: make_steps("generate", impl, folder, sizes) for impl in IMPLS}
        medians, checks = time_alternating(steps, args.repeats)
        del steps
        prompt_len = vlm_examples(sizes, with_answer=False)[0]["input_ids"].shape[1]
        parts = decode_parts(folder, prompt_len, args.part_repeats)
    n = sizes.new_tokens
    ours, theirs = medians["ours"], medians["transformers"]
    per_token = {impl: (medians[impl]["generate"] - medians[impl]["prefill"]) / (n - 1) * 1e3 for impl in IMPLS}
    budget = (theirs["generate"] / args.goal - ours["prefill"]) / (n - 1) * 1e3
    rows = [
        ["prefill (s)", ours["prefill"], theirs["prefill"]],
        [f"whole call, {n} tokens (s)", ours["generate"], theirs["generate"]],
        ["decoded token (ms), in the call", per_token["ours"], per_token["transformers"]],
        [f"budget per decoded token for {args.goal:g}x end to end (ms)", budget, "-"],
        ["our step, alone (ms)", parts["step"], "-"],
        ["our screened head, alone (ms)", parts["head"], "-"],
        ["our step + head in turn (ms)", parts["step + head"], "-"],
        ["our step + a read of the head's size (ms)", parts["step + sweep"], "-"],
        ["that read, alone (ms)", parts["sweep"], "-"],
    ]
    same = checks["ours"]["generate"] == checks["transformers"]["generate"]
    floor = parts["step"] + parts["head"]
    verdict = "within" if floor <= budget else "over"
    notes = (
        f"Prompt of {prompt_len} tokens; medians of {args.repeats} alternating generate calls and of "
        f"{args.part_repeats} repeats of each part; greedy tokens identical to transformers' = {same}. "
        f"The most favourable decode (step and head apart, each in cache) is {floor:.3g} ms per token: {verdict} "
        f"the {budget:.3g} ms budget for {args.goal:g}x end to end."
    )
    publish = print_only if args.quick else report
    publish("Generation: the decoding budget for an end-to-end goal", ["measure", "ours", "transformers"], rows, notes)


if __name__ == "__main__":
    main()
