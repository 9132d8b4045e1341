"""`nanomolmo2 explain`: one image or video through one forward pass, every stage printed, four pictures.

nanomolmo2 explain photo.jpg                                  a Molmo2-sized model, random weights (30-60 s)
nanomolmo2 explain clip.mp4 --question "What happens?" --out runs/explain/clip
nanomolmo2 explain photo.jpg --model tiny                     a tiny model: the same stages in seconds
nanomolmo2 explain photo.jpg --checkpoint runs/demo/stage3/final

Everything runs in fp32 on the CPU. Random weights give real shapes and a real layout, not real answers:
the top-5 next tokens are noise then.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..data.processor import Processor
from ..data.tokenizer import checkpoint_tokenizer
from ..data.video_io import VideoError
from ..models.config import NanoMolmo2Config
from ..models.nanomolmo2 import NanoMolmo2
from .pictures import save_pictures
from .walk import Stage, Walk, walk

PICTURE_NOTES = {
    "crops": "the crop grid over the image (video: the sampled frames)",
    "pooling": "which patches each vision token pools",
    "tokens": "the prompt's tokens, coloured by kind",
    "attention": "who may attend to whom: the prompt, and a packed training row",
}


def tiny_config() -> NanoMolmo2Config:
    """NanoMolmo2Config.tiny() with 98-px crops: 7x7 patches, odd like the real 27x27, so 2x2 windows need
    -1 padding too; up to 4 crops overlapping by 1 patch on each side, so the tiling is there to see."""
    config = NanoMolmo2Config.tiny()
    config.vision.image_size = 98
    config.vision.max_crops = 4
    config.vision.overlap_margins = (1, 1)
    return config


def build_model(name: str = "molmo2", checkpoint: str | Path | None = None, seed: int = 0) -> NanoMolmo2:
    """A Molmo2-format checkpoint, or random fp32 weights in the Molmo2-sized ("molmo2") or "tiny" config."""
    if checkpoint is not None:
        return NanoMolmo2.from_pretrained(checkpoint).eval()
    if name not in ("molmo2", "tiny"):
        raise ValueError(f"unknown model {name!r}: use 'molmo2' or 'tiny'")
    torch.manual_seed(seed)
    with torch.no_grad():  # initialisation only: no autograd graph is needed
        return NanoMolmo2(NanoMolmo2Config() if name == "molmo2" else tiny_config()).eval()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("media", help="an image or a video file")
    parser.add_argument("--question", help="the user's question (default: 'Describe this image.' / '... video.')")
    parser.add_argument("--out", default="runs/explain", help="folder for the pictures")
    parser.add_argument("--checkpoint", help="a Molmo2-format folder (default: random weights; overrides --model)")
    parser.add_argument("--model", choices=["molmo2", "tiny"], default="molmo2", help="config for random weights")
    parser.add_argument("--max-frames", type=int, default=8, help="at most this many video frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")


def format_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def format_stage(number: int, stage: Stage) -> list[str]:
    """`NN. name   label [shape]  label [shape]`, then the meaning and the details, indented."""
    shapes = "   ".join(f"{label} {format_shape(shape)}" for label, shape in stage.shapes.items())
    lines = [f"{number:2d}. {stage.name:<11} {shapes}", f"    {'':<11} {stage.meaning}"]
    return lines + [f"    {'':<11}   {detail}" for detail in stage.details]


def format_walk(result: Walk) -> str:
    lines = []
    for number, stage in enumerate(result.stages, start=1):
        lines += format_stage(number, stage)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    path = Path(args.media)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    start = time.time()
    model = build_model(args.model, args.checkpoint, args.seed)
    processor = Processor.for_model(model.config, checkpoint_tokenizer(args.checkpoint))
    what = f"checkpoint {args.checkpoint}" if args.checkpoint else f"{args.model} config, random weights"
    if not args.checkpoint:
        what += f" (seed {args.seed}: real shapes and layout, meaningless guesses)"
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {what}, {params / 1e6:,.1f} M parameters, built in {time.time() - start:.1f} s")
    start = time.time()
    try:
        result = walk(model, processor, path, args.question, args.max_frames)
    except VideoError as error:
        raise SystemExit(f"{path}: neither an image PIL opens nor a video OpenCV reads ({error})") from error
    print(f"{result.kind}: {path}   question: {result.question!r}   ({time.time() - start:.1f} s)\n")
    print(format_walk(result))
    paths = save_pictures(result, args.out)
    print("\npictures:")
    for name, picture in paths.items():
        print(f"    {picture}  {PICTURE_NOTES[name]}")
