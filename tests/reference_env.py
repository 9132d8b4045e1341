"""Run a script of tests/reference_scripts/ inside .venv-ref, the environment with torchvision that
transformers' Molmo2 image/video processors need (`make test` builds it)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"


def run_reference(script: str, *args: str | Path) -> None:
    if not REF_PYTHON.exists():
        pytest.fail(f"{REF_PYTHON} is missing: run `make test`, which builds the reference environment")
    result = subprocess.run(
        [str(REF_PYTHON), str(ROOT / "tests" / "reference_scripts" / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"reference script {script} failed:\n{result.stderr[-4000:]}")
