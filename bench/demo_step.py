"""The demo's training steps, side by side: what a stage-1 and a stage-2 step cost, and what makes them cheaper.

    python bench/demo_step.py [--steps 12] [--data data/demo/train] [--variants default,malloc]

Each variant trains `--steps` steps of the demo's stage configs (tiny_stage1 compiled, tiny_stage2 eager, bf16
autocast where the CPU has it; both from the committed pretrained parts with a new connector, as the demo's stage
1 starts) in its own fresh process, one after the other, and reports the median step time after two warm-up steps
(the first compiles). Variants:

- `default`: as `make demo` runs them (the base vocabulary's embedding rows frozen, as Molmo2 keeps them);
- `embedding trained`: the whole 151,936-row embedding table trained (`freeze_embedding = false`), as the demo
  ran before: its dense gradient (117 MB at width 192) is filled at every step and AdamW updates every row;
- `malloc`: glibc's allocator keeps freed memory instead of handing big blocks back to the kernel
  (`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` / `MALLOC_TOP_PAD_`): every step allocates the same big
  tensors (the 151,936-row embedding gradient alone is 117 MB at width 192), and each fresh mapping is paid for
  again in page faults, which the profile shows as `fill_` and `embedding_dense_backward` time.

The data folder is the demo's training split (`make demo` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402

MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "536870912",
}
# name: (environment, config overrides)
VARIANTS = {"default": ({}, {}), "embedding trained": ({}, {"freeze_embedding": False}), "malloc": (MALLOC, {})}

CHILD = """
import json, sys, time
from nanomolmo2.training.config import load_config
from nanomolmo2.training.trainer import Trainer
from nanomolmo2.pretrain.parts import pretrained_folders
stage, steps, data, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
vision, qwen3 = pretrained_folders(out)
overrides = {"data": data, "out_dir": out + "/run", "max_steps": 1000, "save_every": 0, "eval_every": 0,
             "log": "tensorboard", "output_vocabulary": "data", "compile": stage == 1, "vision_path": str(vision),
             "qwen3_path": str(qwen3), **json.loads(sys.argv[5])}
config = load_config(f"tiny_stage{stage}", overrides)
config.model = load_config("tiny_stage1").model  # stage 2 starts from stage 1's model: the same architecture
trainer = Trainer(config)
times, tokens = [], []
for _ in range(steps):
    start = time.perf_counter()
    metrics = trainer.train_step()
    times.append(time.perf_counter() - start)
    tokens.append(metrics["tokens"])
trainer.close()
print("RESULT " + json.dumps({"times": times, "tokens": tokens}))
"""


def run(stage: int, steps: int, data: str, env: dict, overrides: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(stage), str(steps), data, out, json.dumps(overrides)],
            env={**os.environ, **env}, capture_output=True, text=True, check=True,
        )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--data", default="data/demo/train")
    parser.add_argument("--stages", default="1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names, the first the base")
    args = parser.parse_args()
    rows = []
    for stage in (int(s) for s in args.stages.split(",")):
        base = None
        for name in args.variants.split(","):
            env, overrides = VARIANTS[name]
            result = run(stage, args.steps, args.data, env, overrides)
            median = statistics.median(result["times"][2:])
            base = base or median
            tokens = statistics.mean(result["tokens"][2:])
            rows.append([f"stage {stage}", name, median, tokens / median, base / median])
    report(
        "The demo's training step: variants side by side",
        ["stage", "variant", "median step (s)", "tokens/s", "speed-up"],
        rows,
        f"{args.steps} steps per variant in a fresh process each, median after 2 warm-up steps; data {args.data}.",
    )


if __name__ == "__main__":
    main()
