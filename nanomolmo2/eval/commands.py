"""`nanomolmo2 generate` and `nanomolmo2 eval`.

nanomolmo2 generate --checkpoint runs/demo/stage3/final --image a.png --prompt "Point to the red circles" --out p.png
nanomolmo2 generate --checkpoint runs/demo/stage3/final --video clip.mp4 --prompt "Describe this video."
nanomolmo2 eval --checkpoint runs/demo/stage3/final --data data/demo/eval --out report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import PIL.Image
import torch

from ..data.image_preprocessing import load_image
from ..data.points import parse_points
from ..data.processor import Processor
from ..data.video_io import load_video
from ..models.nanomolmo2 import NanoMolmo2
from .draw import caption_under, draw_points, grid
from .generation import Request, generate_answers


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[NanoMolmo2, Processor]:
    model = NanoMolmo2.from_pretrained(checkpoint).to(device).eval()
    return model, Processor.for_model(model.config)


def points_picture(answer: str, image: PIL.Image.Image | None = None, video=None) -> PIL.Image.Image:
    """The answer's points on the image, or on the frames (a strip) at the times they name."""
    points = parse_points(answer)
    if image is not None:
        w, h = image.size
        return draw_points(image, [(x / 1000 * w, y / 1000 * h) for _, _, x, y in points], scale=max(1, 448 // w))
    frames, times = video
    h, w = frames.shape[1:3]
    tiles = []
    for frame, t in zip(frames, times, strict=True):
        here = [(x / 1000 * w, y / 1000 * h) for pt, _, x, y in points if round(pt, 1) == round(t, 1)]
        tiles.append(caption_under(draw_points(PIL.Image.fromarray(frame), here, scale=max(1, 224 // w)), f"{t:.1f}s"))
    return grid(tiles, columns=min(8, len(tiles)))


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a Molmo2-format folder (e.g. a run's final/)")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--image")
    media.add_argument("--video")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", help="PNG with the answer's points drawn, when it has points")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-frames", type=int, default=16)


def run_generate(args: argparse.Namespace) -> None:
    model, processor = load_model(args.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    image = load_image(args.image).convert("RGB") if args.image else None
    video = load_video(args.video, max_frames=args.max_frames) if args.video else None
    request = Request(args.prompt, [image] if image else [], video, args.max_new_tokens)
    answer = generate_answers(model, processor, [request])[0]
    print(answer)
    if args.out and parse_points(answer):
        points_picture(answer, image, video).save(args.out)
        print(f"points drawn in {args.out}")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="a held-out folder with masks (e.g. nanomolmo2 synth --seed 1)")
    parser.add_argument("--out", help="JSON report (metrics and every answer)")
    parser.add_argument("--limit", type=int, help="at most this many images / videos / text rows")
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--no-blank", action="store_true", help="skip the blank-image variants")


def run_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate

    model, processor = load_model(args.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    metrics, records = evaluate(model, processor, args.data, args.limit, args.max_frames, blank=not args.no_blank)
    for name, value in sorted(metrics.items()):
        print(f"{name:28s} {value:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": metrics, "answers": records}, indent=1))
