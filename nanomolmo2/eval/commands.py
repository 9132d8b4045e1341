"""`nanomolmo2 generate` and `nanomolmo2 eval`.

nanomolmo2 generate --checkpoint runs/demo/stage3/final --image a.png --prompt "Point to the red circles" --out p.png
nanomolmo2 generate --checkpoint runs/demo/stage3/final --video clip.mp4 --prompt "Describe this video."
nanomolmo2 eval --checkpoint runs/demo/stage3/final --data data/demo/eval --out report.json
nanomolmo2 eval --checkpoint runs/stage3/final --data data/heldout --out report.json   # a `prepare`d folder

`eval` reads a ShapesWorld folder (images.jsonl / videos.jsonl with object masks: evaluate.py) or, otherwise, a
folder written by `nanomolmo2 prepare` (PixMo-Points, PixMo-Count, VQA tables: prepared.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..data.image_preprocessing import load_image
from ..data.jsonl import jsonl_files
from ..data.processor import Processor
from ..data.video_io import load_video
from ..errors import UsageError
from ..models.nanomolmo2 import NanoMolmo2
from ..training.model_card import add_evaluation
from .conversation import Conversation, Sampling
from .draw import answer_picture
from .draw import points_picture as points_picture  # where the demo imports it from
from .loading import add_model_arguments, open_model


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[NanoMolmo2, Processor]:
    """The model in fp32 on `device`, with the processor of its vision encoder and its own tokenizer."""
    return open_model(checkpoint, "fp32", device)


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--image")
    media.add_argument("--video")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", help="PNG with the answer's points drawn, when it has points")
    parser.add_argument("--max-frames", type=int, default=16)


def run_generate(args: argparse.Namespace) -> None:
    model, processor = open_model(args.checkpoint, args.dtype, args.device)
    images = [load_image(args.image).convert("RGB")] if args.image else []
    video = load_video(args.video, max_frames=args.max_frames) if args.video else None
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    answer = Conversation(model, processor, images, video, sampling).ask(args.prompt)
    print(answer)
    if args.out and (picture := answer_picture(answer, images, video)) is not None:
        picture.save(args.out)
        print(f"points drawn in {args.out}")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument(
        "--data",
        required=True,
        help="a held-out folder: ShapesWorld with masks (nanomolmo2 synth --seed 1) or one `nanomolmo2 prepare` wrote",
    )
    parser.add_argument("--out", help="JSON report (metrics and every answer)")
    parser.add_argument("--limit", type=int, help="at most this many images / videos / text rows")
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--no-blank", action="store_true", help="skip the blank-image variants")


def is_shapesworld(folder: Path) -> bool:
    """ShapesWorld's folders hold images.jsonl / videos.jsonl (with masks); prepared ones name files by dataset."""
    return any(f.name in ("images.jsonl", "videos.jsonl") for f in jsonl_files(folder))


def run_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate
    from .prepared import evaluate_prepared

    folder = Path(args.data)
    if not folder.is_dir():
        raise UsageError(f"no data folder {folder}")
    model, processor = load_model(args.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    if is_shapesworld(folder):
        metrics, records = evaluate(model, processor, folder, args.limit, args.max_frames, blank=not args.no_blank)
    else:
        metrics, records = evaluate_prepared(model, processor, folder, args.limit, blank_images=not args.no_blank)
    for name, value in sorted(metrics.items()):
        print(f"{name:28s} {value:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": metrics, "answers": records}, indent=1))
    if add_evaluation(Path(args.checkpoint), metrics, f"Molmo2's metrics on `{args.data}` (`nanomolmo2 eval`)."):
        print(f"added to the model card {Path(args.checkpoint) / 'README.md'}")
