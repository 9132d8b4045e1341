"""`make pretrained`: make the tiny model's pretrained parts from the demo's training split and keep them.

    python -m nanomolmo2.pretrain --train data/demo/train --held-out data/demo/eval --out nanomolmo2/pretrained

1. the vision encoder (pretrain/vision.py): SigLIP's sigmoid loss and the grounding head on the training split's
   images and 2-fps video frames -> out/siglip-tiny, a SigLIP folder;
2. the language model (pretrain/language.py): next-token prediction on the training split's text world
   -> out/qwen3-tiny, Qwen3's config and names, the embedding rows the text uses (parts.py makes the full folder).

Each gets a model card with its recipe, seed, time and held-out scores. The held-out split is only scored, never
trained on. `--quick` is a short version for the tests (the same code, a few steps).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from ..formats.weights import write_folder_atomically
from .language import LanguagePretraining, compact_folder_files, text_world_scores
from .language import pretrain as pretrain_language
from .parts import LANGUAGE, PRETRAINED, VISION
from .vision import VisionPretraining, siglip_folder_files
from .vision import pretrain as pretrain_vision


def card(title: str, summary: str, recipe: dict, scores: dict, seconds: float, command: str) -> str:
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in scores.items())
    return f"""# {title}

{summary}

Made by nanoMolmo2's own code in {seconds / 60:.0f} minutes on a CPU: `{command}` (`make pretrained`). The training
split is the demo's (ShapesWorld, seed 0); the held-out split (seed 1) is only scored.

## Held-out scores

| metric | value |
|---|---|
{rows}

## Recipe

```json
{json.dumps(recipe, indent=2)}
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", default="data/demo/train")
    parser.add_argument("--held-out", default="data/demo/eval")
    parser.add_argument("--out", default=str(PRETRAINED))
    parser.add_argument("--runs", default="runs/pretrain", help="where the training logs go (metrics.jsonl)")
    parser.add_argument("--only", choices=(VISION, LANGUAGE), help="make one part only")
    parser.add_argument("--quick", action="store_true", help="a few steps (the tests)")
    args = parser.parse_args(argv)
    for folder in (args.train, args.held_out):  # a ShapesWorld split (`make pretrained` writes the demo's)
        if not (Path(folder) / "images.jsonl").is_file():
            parser.error(f"{folder}: no images.jsonl (a ShapesWorld folder: python -m nanomolmo2.demo --data-only)")
    out = Path(args.out)
    command = "python -m nanomolmo2.pretrain" + (" --quick" if args.quick else "")
    if args.only in (None, VISION):
        config = VisionPretraining(data=args.train, out=str(Path(args.runs) / VISION))
        if args.quick:
            config.steps, config.batch, config.warmup = 30, 32, 5
        start = time.time()
        model, vocabulary, scores = pretrain_vision(config, args.held_out)
        summary = (
            "The tiny vision encoder nanoMolmo2's demo starts from: a ViT trained with SigLIP's sigmoid image-text "
            "loss on ShapesWorld images and video frames with their captions, plus a per-patch grounding head "
            "(the object centred in each patch), as SigLIP 2 adds location-aware objectives. Both towers are here; "
            "transformers' `SiglipModel` loads the folder, nanoMolmo2 reads its vision tower."
        )
        text = card("siglip-tiny", summary, asdict(config), scores, time.time() - start, command)
        write_folder_atomically(out / VISION, siglip_folder_files(model, vocabulary, text))
    if args.only in (None, LANGUAGE):
        config = LanguagePretraining(data=args.train, out=str(Path(args.runs) / LANGUAGE))
        if args.quick:
            config.steps, config.rows, config.warmup = 20, 4, 5
        start = time.time()
        model = pretrain_language(config)
        scores = text_world_scores(model, args.held_out, limit=20 if args.quick else 100)
        summary = (
            "The tiny Qwen3 nanoMolmo2's demo starts from: 4 layers, 192 wide, trained by next-token prediction on "
            "ShapesWorld's text world (every scene written as a grid of cell words, with the questions and answers "
            "the vision-language model trains on). `weights.safetensors` holds Qwen3's weights with the embedding "
            "table cut to the rows the text uses; `nanomolmo2.pretrain.parts.pretrained_folders` writes the full "
            "Qwen3 folder (zeros in the other rows) that transformers' `Qwen3ForCausalLM` and nanoMolmo2 load."
        )
        text = card("qwen3-tiny", summary, asdict(config), scores, time.time() - start, command)
        write_folder_atomically(out / LANGUAGE, compact_folder_files(model, text))


if __name__ == "__main__":
    main()
