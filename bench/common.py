"""Shared by the benchmarks: print a table and append it to bench/RESULTS.md with machine, date and command."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    threads = torch.get_num_threads()
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {threads} threads (torch {torch.__version__})"


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(title: str, header: list[str], rows: list[list], notes: str = "") -> None:
    """Print the table and append it to RESULTS.md."""
    text = table(header, rows)
    print(text)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = "python " + " ".join(sys.argv)
    entry = f"\n## {title}\n{stamp} · {machine()} · `{command}`\n\n{text}\n"
    if notes:
        entry += f"\n{notes}\n"
    with open(RESULTS, "a") as f:
        f.write(entry)
