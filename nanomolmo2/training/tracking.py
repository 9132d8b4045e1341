"""Run tracking: where a run's numbers go, besides the run folder's metrics.jsonl.

    nanomolmo2 train ... --log tensorboard,wandb        (default: tensorboard)

- `tensorboard`: event files in `out_dir/tensorboard` (`tensorboard --logdir runs/`).
- `wandb`: Weights & Biases, an optional extra (`pip install -e '.[wandb]'`), imported only when asked for.
  `WANDB_MODE=offline` keeps the run on disk (`out_dir/wandb/`) for a later `wandb sync`. A resumed run goes on
  in the same W&B run (its id is kept in `out_dir/wandb-run-id`).

At the start every backend gets the config, the git commit of the code and a summary of the data (the mixture's
datasets and sizes, the data folder's info.json); then each logged step's numbers: nested dicts become
`name/key` (the learning rate and grad norm of each parameter group, the skipped items of each reason).
`group_grad_norms` is the trainer's per-group gradient norm, computed next to the global clip.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

BACKENDS = ("tensorboard", "wandb")


def group_grad_norms(groups: dict[str, Sequence[torch.nn.Parameter]]) -> torch.Tensor:
    """The L2 norm of each group's gradients `[groups]`, in the dict's order, left on the device (no sync).
    Sharded (FSDP2 DTensor) gradients give the norm of the whole group."""
    norms = []
    for params in groups.values():
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            norms.append(torch.zeros((), device=next(iter(params)).device))
            continue
        norm = torch.nn.utils.get_total_norm(grads)
        norms.append(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    return torch.stack(norms).float()


def git_commit() -> str:
    """The commit of the code that runs (with "+changes" when the work tree differs from it), or "unknown"."""
    folder = Path(__file__).resolve().parent
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        commit = run("rev-parse", "HEAD")
        if commit.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return commit.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_summary(mixture_config: list, datasets: Sequence, folder: str | Path) -> dict:
    """What the run trains on: the configured mixture, each dataset's kind and size, the folder's info.json."""
    info = Path(folder) / "info.json"
    return {
        "folder": str(folder),
        "mixture": mixture_config,
        "datasets": {getattr(d, "name", f"{type(d).__name__}:{i}"): len(d) for i, d in enumerate(datasets)},
        "info": json.loads(info.read_text()) if info.is_file() else None,
    }


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of a metrics dict, nested dicts as `name/key`; booleans and anything else left out."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class TensorBoard:
    def __init__(self, out: Path, start: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"))
        for key, value in start.items():  # as text: a JSON block per item
            self.writer.add_text(key, "```\n" + json.dumps(value, indent=2, default=str) + "\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, out: Path, start: dict, project: str) -> None:
        try:
            import wandb
        except ImportError:
            raise SystemExit("--log wandb needs Weights & Biases: pip install -e '.[wandb]'") from None
        id_file = out / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(
            project=project, name=out.name, id=run_id, resume="allow", dir=str(out), config=start, reinit="create_new"
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """The chosen backends: `log(metrics)` sends one step's numbers (its "step" key is the x axis) to each."""

    def __init__(self, names: str, out: Path, config: dict, data: dict, project: str = "nanomolmo2") -> None:
        chosen = [name.strip() for name in names.split(",") if name.strip()]
        if unknown := set(chosen) - set(BACKENDS):
            raise ValueError(f"unknown --log backend(s) {sorted(unknown)}: use {', '.join(BACKENDS)}")
        start = {"config": config, "git_commit": git_commit(), "data": data}
        self.backends = [
            TensorBoard(out, start) if name == "tensorboard" else WandB(out, start, project) for name in chosen
        ]

    def log(self, metrics: dict) -> None:
        values = flatten({k: v for k, v in metrics.items() if k != "step"})
        for backend in self.backends:
            backend.log(values, metrics["step"])

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
