"""`nanomolmo2 synth`: write ShapesWorld images (and videos) as a dataset folder.

nanomolmo2 synth --out data/shapes --images 1000 --seed 0 [--level easy|hard] [--videos 100]
"""

from __future__ import annotations

import argparse
import time

from .images import write_shapesworld
from .scene import LEVELS
from .videos import write_shapesworld_videos


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--images", type=int, default=1000, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0); same seed, same bytes")
    parser.add_argument("--level", choices=list(LEVELS), default="easy")
    parser.add_argument("--image-size", type=int, default=224, help="image side in pixels (56 to 1024)")
    parser.add_argument("--text", type=int, default=None, help="number of text-only rows (default: images // 10)")
    parser.add_argument("--videos", type=int, default=0, help="number of videos (videos.jsonl, videos.py)")
    parser.add_argument("--video-size", type=int, default=112, help="video frame side in pixels")


def run(args: argparse.Namespace) -> None:
    start = time.time()
    info = write_shapesworld(args.out, args.images, args.seed, args.level, args.image_size, args.text)
    print(
        f"ShapesWorld {info['level']}: {info['images']} images ({info['objects']} objects, "
        f"{sum(info['annotations'].values())} annotations) and {info['text']} text rows "
        f"-> {args.out} in {time.time() - start:.1f}s"
    )
    if args.videos:
        start = time.time()
        info = write_shapesworld_videos(args.out, args.videos, args.seed, args.level, args.video_size)
        print(
            f"ShapesWorld {info['level']} videos: {info['videos']} videos ({info['frames']} frames, "
            f"{info['objects']} objects, {sum(info['annotations'].values())} annotations) "
            f"-> {args.out} in {time.time() - start:.1f}s"
        )
