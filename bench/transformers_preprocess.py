"""transformers' Molmo2ImageProcessor timed one photo at a time; the reference side of bench/vs_transformers.py.

    .venv-ref/bin/python bench/transformers_preprocess.py THREADS CROP MAX_CROPS MARGIN_L MARGIN_R NAME=PHOTO...

Runs in .venv-ref (the processor needs torchvision). Photos are decoded and EXIF-transposed once, as our
side does. Prints one JSON line {"crops": {name: n}, "torch": version} when ready (after one warm-up pass),
then for every "run" line on stdin one JSON line {name: seconds}, one timed call per photo, until end of input.
"""

import json
import sys
import time

import PIL.Image
import PIL.ImageOps
import torch
from transformers import Molmo2ImageProcessor


def main(threads: str, crop: str, max_crops: str, left: str, right: str, *photos: str) -> None:
    torch.set_num_threads(int(threads))
    processor = Molmo2ImageProcessor(
        max_crops=int(max_crops),
        overlap_margins=[int(left), int(right)],
        size={"height": int(crop), "width": int(crop)},
    )
    images = {}
    for item in photos:
        name, path = item.split("=", 1)
        image = PIL.ImageOps.exif_transpose(PIL.Image.open(path))
        image.load()
        images[name] = image
    crops = {
        name: int(processor(images=[image], return_tensors="pt")["image_num_crops"][0])
        for name, image in images.items()
    }
    print(json.dumps({"crops": crops, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        seconds = {}
        for name, image in images.items():
            start = time.perf_counter()
            processor(images=[image], return_tensors="pt")
            seconds[name] = time.perf_counter() - start
        print(json.dumps(seconds), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
