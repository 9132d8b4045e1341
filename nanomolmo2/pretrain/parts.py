"""The tiny model's pretrained parts, as the repository keeps them, and the folders stage 1 loads them from.

`make pretrained` makes them (pretrain/vision.py, pretrain/language.py) from the demo's training split and writes
them to `nanomolmo2/pretrained/`:

    siglip-tiny/   a SigLIP folder (both towers; transformers' SiglipModel loads it), with its model card
    qwen3-tiny/    a Qwen3 config, model card, and `weights.safetensors`: Qwen3's weights with the embedding table
                   cut to the rows the text world trains (the rest is 117 MB of untouched initial values)

`pretrained_folders(out)` gives stage 1 what Molmo2's stage 1 gets: a vision encoder folder and a complete Qwen3
folder (the compact weights expanded, zeros in the rows ShapesWorld's text never uses).
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from safetensors.torch import load_file

from ..formats.weights import write_folder_atomically
from .language import COMPACT_WEIGHTS, expand_state, qwen3_folder_files

PRETRAINED = Path(str(importlib.resources.files("nanomolmo2") / "pretrained"))
VISION, LANGUAGE = "siglip-tiny", "qwen3-tiny"


def pretrained_folders(out: str | Path, source: str | Path = PRETRAINED) -> tuple[Path, Path]:
    """(vision encoder folder, Qwen3 folder) for stage 1: the SigLIP folder as kept, the Qwen3 one written to
    `out/qwen3-tiny` (again only when the kept weights changed)."""
    source, out = Path(source), Path(out)
    kept = source / LANGUAGE
    missing = [p for p in (source / VISION / "model.safetensors", kept / COMPACT_WEIGHTS) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no pretrained parts: {', '.join(map(str, missing))} missing (make pretrained)")
    folder = out / LANGUAGE
    stamp = (kept / COMPACT_WEIGHTS).stat()
    marker = f"{stamp.st_size}:{stamp.st_mtime_ns}"
    if not (folder / ".made_from").is_file() or (folder / ".made_from").read_text() != marker:
        config = json.loads((kept / "config.json").read_text())
        state = expand_state(load_file(kept / COMPACT_WEIGHTS), config["vocab_size"])
        card = (kept / "README.md").read_text() if (kept / "README.md").is_file() else ""
        files = qwen3_folder_files(config, state, card) | {".made_from": marker}
        write_folder_atomically(folder, files)
    return source / VISION, folder
