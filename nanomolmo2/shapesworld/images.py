"""ShapesWorld images: scenes (scene.py) with their annotations (tasks.py) written as a JSONL dataset.

The built-in synthetic dataset, so that nanoMolmo2 trains and evaluates with no downloads. The annotations
are caption, pointing, counting, vqa and text-only chat.

    nanomolmo2 synth --out data/shapes --images 1000 --seed 0 [--level easy|hard] [--image-size 224] [--text N]

writes, in the format of docs/DATA_FORMAT.md:

    out/images/000000.png ...   RGB images
    out/masks/000000.png ...    label maps ("L"): pixel value k = object with "id" k, 0 = background
    out/images.jsonl            one row per image with its annotations, "objects" and "masks"
    out/text.jsonl              text-only rows (default images // 10)
    out/info.json               generator, version, seed, level, image size and counts

Everything about image i is a pure function of (seed, i): it is the same whether 10 or 10,000 images are written.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .scene import LEVELS, Scene, make_scene
from .tasks import annotate, text_messages

VERSION = 3  # 2: counting answers always write their points ("count_point" instead of a bare "count"); 3: points first


def make_row(seed: int, index: int, level: str = "easy", image_size: int = 224) -> tuple[dict, Scene]:
    """The images.jsonl row of image `index` (media paths relative to the JSONL's folder) and its scene."""
    scene = make_scene(seed, index, level, image_size)
    rng = np.random.default_rng([seed, index, 1])
    lv, name = LEVELS[level], f"{index:06d}.png"
    row = {
        "id": f"shapes-{seed}-{index}",
        "image": f"images/{name}",
        "width": image_size,
        "height": image_size,
        "annotations": annotate(scene.objects, lv.colours, lv.shapes, image_size, rng),
        "objects": scene.objects,
        "masks": f"masks/{name}",
    }
    return row, scene


def text_row(seed: int, index: int) -> dict:
    """Text-only row `index`: one chat exchange with a checkable answer, no image."""
    rng = np.random.default_rng([seed, index, 2])
    return {"id": f"shapes-text-{seed}-{index}", "annotations": [{"task": "chat", "messages": text_messages(rng)}]}


def write_image(out: Path, seed: int, index: int, level: str, image_size: int) -> dict:
    """Save image `index` and its mask under `out` and return its row."""
    row, scene = make_row(seed, index, level, image_size)
    scene.image.save(out / row["image"], compress_level=1)  # fast; PNG stays lossless and byte-deterministic
    scene.mask.save(out / row["masks"], compress_level=1)
    return row


def write_shapesworld(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    level: str = "easy",
    image_size: int = 224,
    num_text: int | None = None,
    workers: int = 4,
) -> dict:
    """Write the dataset (layout in the module docstring) and return the summary that goes into info.json.

    `workers` threads share the work (PNG encoding and numpy release the GIL); the bytes do not depend on it.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    num_text = num_images // 10 if num_text is None else num_text
    tasks, num_objects = Counter(), 0
    with ThreadPoolExecutor(workers) as pool, open(out / "images.jsonl", "w") as f:
        for row in pool.map(lambda i: write_image(out, seed, i, level, image_size), range(num_images)):
            f.write(json.dumps(row) + "\n")
            tasks.update(a["task"] for a in row["annotations"])
            num_objects += len(row["objects"])
    with open(out / "text.jsonl", "w") as f:
        for i in range(num_text):
            f.write(json.dumps(text_row(seed, i)) + "\n")
    info = {
        "generator": "nanomolmo2 ShapesWorld",
        "version": VERSION,
        "seed": seed,
        "level": level,
        "image_size": image_size,
        "images": num_images,
        "text": num_text,
        "objects": num_objects,
        "annotations": dict(sorted(tasks.items())),
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
