"""The benchmarks run and print their tables: bench/gpu.py --tiny on the CPU, bench/vs_transformers.py --quick.

Timings on a shared CPU say nothing, so no timing is compared with anything; bench/gpu.py's numbers are checked
for what they must be whatever the machine (positive, fractions in (0, 1), every configuration ok), and the
gate for its exit status. Neither run appends to bench/RESULTS.md.
"""

import json
import math
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
    """Every configuration and both 2-rank smoke tests (DDP, FSDP2: 3 steps, save, resume as one process) pass,
    with numbers that make sense: tokens/s > 0, no MFU on a CPU, memory >= 0, a fused SDPA kernel."""
    out = run("gpu.py", "--tiny", "--json", str(tmp_path / "results.json"))
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
    assert [s["name"] for s in results["smoke"]] == ["smoke-ddp", "smoke-fsdp"]
    for smoke in results["smoke"]:
        assert smoke["status"] == "ok" and len(smoke["losses"]) == 4 and all(map(math.isfinite, smoke["losses"]))


def test_gpu_bench_exits_non_zero_when_a_config_fails(tmp_path):
    out = run("gpu.py", "--tiny", "--no-smoke", "--only", "4k-tiny,36k-tiny", "--fail-config", "36k-tiny",
              "--json", str(tmp_path / "results.json"), status=1)  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == ["36k-tiny"]
    statuses = {c["name"]: c["status"] for c in results["configs"]}
    assert statuses["4k-tiny"] == "ok" and statuses["36k-tiny"].startswith("FAILED") and "FAILED" in out


@pytest.mark.slow
def test_vs_transformers_quick_runs():
    out = run("vs_transformers.py", "--quick")
    for row in ("SFT step", "nanoMolmo2 step", "tokens, end to end", "all (median of ratios)"):
        assert row in out
    assert "loss ours" in out and "greedy tokens identical" in out


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
