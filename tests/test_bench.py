"""The benchmarks run and print their tables: bench/gpu.py --tiny on the CPU, bench/vs_transformers.py --quick.

Timings on a shared CPU say nothing, so no timing is compared with anything; bench/gpu.py's numbers are checked
for what they must be whatever the machine (positive, fractions in (0, 1), every configuration ok), and the
gate for its exit status; vs_transformers.py's tables are read back cell by cell (both sides' first-step losses
equal, greedy tokens identical, every time positive, every speed-up the ratio of its row's two numbers). Neither
run appends to bench/RESULTS.md.
"""

import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str, status: int = 0) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == status, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_gpu_bench_tiny_runs_on_cpu(tmp_path):
    """Every configuration and the FSDP2 smoke test (2 ranks x 3 steps, save, resume as one process) pass, with
    numbers that make sense: tokens/s > 0, no MFU on a CPU, memory >= 0, a fused SDPA kernel. (DDP's smoke test
    is the same code with another mode; the trainer's 2-process tests cover DDP itself.)"""
    out = run("gpu.py", "--tiny", "--smoke", "fsdp", "--json", str(tmp_path / "results.json"))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == [] and "| config" in out and "FAILED" not in out
    assert [c["name"] for c in results["configs"]] == ["4k-tiny", "16k-tiny", "36k-tiny", "4k-tiny-sdpa"]
    for config in results["configs"]:
        assert config["status"] == "ok" and f"| {config['name']}" in out
        assert config["tokens_per_s"] > 0 and config["tflops"] > 0 and config["steps"] >= 1
        assert config["mfu"] is None or 0 < config["mfu"] < 1  # no peak FLOP/s for a CPU
        assert config["alloc_gib"] >= 0 and (config["reserved_gib"] is None or config["reserved_gib"] >= 0)
        assert config["loss_tokens"] > 0 and config["crops"] > 0 and config["mean_context"] > 1
        assert math.isfinite(config["loss"]) and config["kernel"].startswith(
            "sdpa ("
        )  # no FlexAttention backward on CPU
    assert [s["name"] for s in results["smoke"]] == ["smoke-fsdp"]
    for smoke in results["smoke"]:
        assert smoke["status"] == "ok" and len(smoke["losses"]) == 4 and all(map(math.isfinite, smoke["losses"]))


def test_gpu_bench_exits_non_zero_when_a_config_fails(tmp_path):
    out = run("gpu.py", "--tiny", "--no-smoke", "--only", "4k-tiny,36k-tiny", "--fail-config", "36k-tiny",
              "--json", str(tmp_path / "results.json"), status=1)  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == ["36k-tiny"]
    statuses = {c["name"]: c["status"] for c in results["configs"]}
    assert statuses["4k-tiny"] == "ok" and statuses["36k-tiny"].startswith("FAILED") and "FAILED" in out


def published_tables(out: str) -> dict[str, list[dict[str, str]]]:
    """The markdown tables printed under `## title` lines: title -> rows, each {column: cell}."""
    tables, title, header = {}, None, None
    for line in out.splitlines():
        if line.startswith("## "):
            title, header = line[3:], None
        elif title and line.startswith("|") and not line.startswith("|-"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header, tables[title] = cells, []
            else:
                tables[title].append(dict(zip(header, cells, strict=True)))
    return tables


def assert_ratio(speed_up: str, faster: float, slower: float) -> None:
    """The table prints 4 significant digits: a ratio of two printed numbers is good to ~1e-3."""
    assert float(speed_up) > 0 and float(speed_up) == pytest.approx(slower / faster, rel=3e-3)


@pytest.mark.slow
def test_vs_transformers_quick_runs():
    out = run("vs_transformers.py", "--quick")
    tables = published_tables(out)
    rows = {r["benchmark"]: r for r in tables["nanoMolmo2 vs transformers: training and generation"]}
    assert list(rows) == [
        "SFT step, Qwen3 LM alone",
        "nanoMolmo2 step, ViT frozen",
        "generate: prefill (image + prompt, 1 token)",
        "generate: 4 tokens, end to end",
        "generate: decode only (3 tokens after the first)",
    ]
    for name, row in rows.items():
        if "-" in (row["ours"], row["transformers"]):  # decode = end to end - prefill: noise may leave nothing
            assert name.startswith("generate: decode only") and row["speed-up"] == "-"
            continue
        ours, theirs = float(row["ours"]), float(row["transformers"])
        assert ours > 0 and theirs > 0, row
        if row["unit"] in ("s/step", "s"):  # times: speed-up = transformers / ours
            assert_ratio(row["speed-up"], ours, theirs)
        else:  # rates (tokens/s): speed-up = ours / transformers
            assert row["unit"] == "tokens/s"
            assert_ratio(row["speed-up"], theirs, ours)
    assert float(rows["SFT step, Qwen3 LM alone"]["peak MiB ours"]) > 0  # --quick measures our first step only
    losses = re.findall(r"(sft|vlm): first-step loss ours (\S+), transformers (\S+?)[;\s]", out)
    assert [name for name, _, _ in losses] == ["sft", "vlm"]
    for _, ours, theirs in losses:  # same weights, same batch: the same loss (printed to 6 decimals)
        assert float(ours) == pytest.approx(float(theirs), abs=1e-4) and math.isfinite(float(ours))
    assert "generate: greedy tokens identical to transformers' = True" in out
    photos = tables["nanoMolmo2 vs transformers: image preprocessing (decoded photo -> crops, patches, pooling)"]
    assert [r["photo"] for r in photos] == ["china", "flower", "all (median of ratios)"]
    for row in photos[:-1]:
        assert int(row["crops"]) > 0
        assert_ratio(row["speed-up"], float(row["ours ms"]), float(row["transformers ms"]))
    median = statistics.median(float(r["speed-up"]) for r in photos[:-1])
    assert float(photos[-1]["speed-up"]) == pytest.approx(median, rel=1e-3)


def test_gpu_bench_kernel_gate_on_cuda_event_names():
    """The kernel check as it reads a CUDA profile (no GPU here: event names as the profiler gives them)."""
    sys.path.insert(0, str(ROOT))
    from bench.gpu import KernelError, attention_kernel

    cuda = torch.device("cuda")
    efficient = {"aten::scaled_dot_product_attention", "aten::_scaled_dot_product_efficient_attention"}
    pooling = [[[40, 16, 1, 72], [40, 16, 9, 72], [40, 16, 9, 72], [40, 1, 1, 9]]]  # one query per window: fine
    assert attention_kernel(efficient, pooling, "sdpa", cuda) == "sdpa (efficient_attention)"
    vit = [[[384, 16, 729, 72], [384, 16, 729, 72], [384, 16, 729, 72]]]
    with pytest.raises(KernelError, match="math kernel on queries of shape"):
        attention_kernel(efficient, vit, "sdpa", cuda)
    with pytest.raises(KernelError, match="no fused SDPA kernel"):
        attention_kernel({"aten::scaled_dot_product_attention"}, [], "sdpa", cuda)
    compiled = efficient | {"triton_tem_fused_flex_attention_0", "triton_tem_fused_flex_attention_backward_1"}
    assert attention_kernel(compiled, pooling, "flex", cuda).startswith("flex (triton_tem_fused_flex_attention")
    with pytest.raises(KernelError, match="no compiled FlexAttention kernel"):
        attention_kernel(efficient | {"aten::bmm", "aten::_softmax"}, [], "flex", cuda)  # the dense reference


@pytest.mark.slow
def test_decode_floor_quick_runs():
    """The decoding budget is what its formula says of the row above it, and the verdict follows the numbers."""
    out = run("decode_floor.py", "--quick")
    rows = {r["measure"]: r for r in published_tables(out)["Generation: the decoding budget for an end-to-end goal"]}
    prefill, call = float(rows["prefill (s)"]["ours"]), float(rows["whole call, 4 tokens (s)"]["transformers"])
    budget = float(rows["budget per decoded token for 1.5x end to end (ms)"]["ours"])
    assert budget == pytest.approx((call / 1.5 - prefill) / 3 * 1e3, abs=1e-3 * (call + prefill) * 1e3)
    parts = {name: float(rows[name]["ours"]) for name in rows if name.startswith("our ")}
    assert len(parts) == 4 and all(v > 0 for v in parts.values())
    floor = parts["our step, alone (ms)"] + parts["our screened head, alone (ms)"]
    if abs(floor - budget) > 0.01 * budget:  # printed to 4 digits: the verdict is only checkable off the boundary
        assert f"ms per token: {'within' if floor <= budget else 'over'} the" in out
    assert "greedy tokens identical to transformers' = True" in out
