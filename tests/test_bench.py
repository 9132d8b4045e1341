"""The benchmarks run and print their tables: bench/gpu.py --tiny on the CPU, bench/vs_transformers.py --quick.

Numbers are not checked (timings on a shared CPU say nothing); neither run appends to bench/RESULTS.md.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_gpu_bench_tiny_runs_on_cpu():
    out = run("gpu.py", "--tiny")
    assert "| config" in out and "tokens/s" in out and "FAILED" not in out
    for name in ("4k-tiny", "16k-tiny", "36k-tiny"):
        assert f"| {name}" in out


@pytest.mark.slow
def test_vs_transformers_quick_runs():
    out = run("vs_transformers.py", "--quick")
    for row in ("SFT step", "nanoMolmo2 step", "tokens, end to end", "all (median of ratios)"):
        assert row in out
    assert "loss ours" in out and "greedy tokens identical" in out
