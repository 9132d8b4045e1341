"""ShapesWorld videos: the shapes of scene.py, still or moving in a straight line, appearing, leaving, changing colour.

A video's last frame is at 2-4 s, a multiple of 0.5 s, at a real frame rate (default 10 fps; frame k shows time
k / fps), and it holds 1-3 (easy) or 1-4 (hard) objects on a still background. At most one object moves, across
at least 0.4 of the frame, left/right or up/down; the others stay still. An object is visible from `appear` to
`disappear` seconds (most for the whole video) and may change colour once. Event times are multiples of 0.5 s, so
a 2-fps reader (Molmo2's sampling: 0, 0.5, ..., the last frame, as long as they fit in its `max_frames`) sees
exactly the frames the annotations speak of, and each of them shows every event (motion.py). Objects never
overlap in any frame; exact per-frame label maps make evaluation exact.

The annotations (video_tasks.py):
- caption: one sentence per object, in order of appearance, in a fixed grammar that `parse_video_caption` reads back:
      sentence  = "A[n] <colour> <shape> " clauses "."      (<colour> = its colour when it appears)
      clauses   = ["appears at <t> seconds"] ("moves from <direction>" | "stays still")
                  ["turns <colour> at <t> seconds"] ["disappears at <t> seconds"], joined by ", " and a final " and "
      direction = "left to right" | "right to left" | "top to bottom" | "bottom to top"
  e.g. "A red circle moves from left to right. A blue square appears at 2.5 seconds and stays still."
- pointing / counting: one [t, x, y] point per object that matches the label, in the first 2-fps frame where it
  matches (with its colour then), as Molmo2-VideoPoint's annotators point once at each object; count = the points.
- tracking: the [t, x, y] tracks, at 2 fps while visible, of the objects named by their first colour and shape.
- vqa: a colour, a place or the number of shapes at a named frame, which shape appears last, when an object changes
  colour, which way the moving object goes.

`nanomolmo2 synth --out DIR --videos N [--video-size 112]` writes, in the format of docs/DATA_FORMAT.md:

    out/videos/000000.mp4 ...   RGB video (mp4v)
    out/masks/000000.npz ...    "masks" uint8 [T, H, W] label maps (k = object "id" k, 0 = background), "times" [T]
    out/videos.jsonl            one row per video with its annotations, "objects" and "masks"
    out/videos_info.json        generator, version, seed, level, size, fps and counts

Video i is a pure function of (seed, i), whatever the number of videos.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ..data.video_io import count_frames
from .motion import MAX_OBJECTS, colour_at, on_grid, place_moving_objects, track
from .scene import BACKGROUNDS, COLOURS, LEVELS, draw_distractors, draw_object
from .video_tasks import annotate_video

# 2: one moving object at most, events on the 2-fps grid, frame-level VQA; 3: counts write points; 4: points first;
# 5: one point per object (its first matching frame), not one per frame
VERSION = 5


@dataclass
class Video:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    masks: np.ndarray  # uint8 [T, H, W] label maps: k = object with "id" k, 0 = background
    times: np.ndarray  # float [T]: frame k shows time k / fps
    objects: list[dict]
    fps: float


def make_video(
    seed: int, index: int, level: str = "easy", size: int = 112, fps: float = 10, seconds: tuple = (2, 4)
) -> Video:
    """Video `index` of the dataset `seed` (both >= 0): its own random generator, independent of the other videos.
    `size` is the frame side in pixels, `seconds` the range of the last frame's time (a multiple of 0.5 s)."""
    rng = np.random.default_rng([seed, index, 3])
    lv = LEVELS[level]
    end = on_grid(rng, *seconds)
    if end is None:
        raise ValueError(f"seconds {seconds} holds no multiple of 0.5 s")
    num_frames = round(end * fps) + 1
    times = np.arange(num_frames) / fps
    objects = place_moving_objects(rng, lv, MAX_OBJECTS[level], size, num_frames / fps, times)
    # a still background, with the images' clutter, and fresh pixel noise in every frame
    background = BACKGROUNDS[lv.backgrounds[int(rng.integers(len(lv.backgrounds)))]](rng, size)
    base = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw_distractors(ImageDraw.Draw(base), rng, lv, size)
    sigma = rng.uniform(*lv.noise)
    paths = [track(o, times) for o in objects]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    masks = np.empty((num_frames, size, size), np.uint8)
    for k, t in enumerate(times):
        frame, mask = base.copy(), Image.new("L", (size, size), 0)
        draw, mask_draw = ImageDraw.Draw(frame), ImageDraw.Draw(mask)
        for o, (centers, seen) in zip(objects, paths, strict=True):
            if seen[k]:
                where = {"shape": o["shape"], "center": centers[k].tolist(), "size": o["size"]}
                draw_object(draw, where, COLOURS[colour_at(o, t)])
                draw_object(mask_draw, where, o["id"])
        # uniform noise of std sigma: five times cheaper to draw than Gaussian, and videos have many frames
        noise = (rng.random((size, size, 3), dtype=np.float32) - 0.5) * (sigma * 12**0.5)
        frames[k] = np.clip(np.asarray(frame) + noise, 0, 255)
        masks[k] = np.asarray(mask)
    return Video(frames, masks, times, objects, fps)


# ---------------------------------------------------------------------------------------------------------------------
# rows and files


def video_row(seed: int, index: int, level: str, video: Video) -> dict:
    """The videos.jsonl row of video `index` of the dataset `seed` (media paths relative to the JSONL's folder)."""
    rng = np.random.default_rng([seed, index, 4])
    num_frames, height, width = video.masks.shape
    return {
        "id": f"shapes-video-{seed}-{index}",
        "video": f"videos/{index:06d}.mp4",
        "width": width,
        "height": height,
        "fps": video.fps,
        "num_frames": num_frames,
        "duration": num_frames / video.fps,
        "annotations": annotate_video(video.objects, LEVELS[level], video.fps, num_frames, width, rng),
        "objects": video.objects,
        "masks": f"masks/{index:06d}.npz",
    }


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed with a fixed file date, so that the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w") as z:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), buffer.getvalue(), zipfile.ZIP_DEFLATED)


def write_video(out: Path, seed: int, index: int, level: str, image_size: int, fps: float, seconds: tuple) -> dict:
    """Save video `index` and its masks under `out`, check that the mp4 decodes, and return its row."""
    video = make_video(seed, index, level, image_size, fps, seconds)
    row = video_row(seed, index, level, video)
    path = out / row["video"]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (image_size, image_size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with the mp4v codec")
    for frame in video.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    decoded = count_frames(path)
    if decoded != len(video.frames):
        raise RuntimeError(f"{path} decodes to {decoded} frames, not {len(video.frames)}")
    save_npz(out / row["masks"], masks=video.masks, times=video.times)
    return row


def write_shapesworld_videos(
    out_dir: str | Path,
    num_videos: int,
    seed: int,
    level: str = "easy",
    image_size: int = 112,
    fps: float = 10,
    min_seconds: float = 2,
    max_seconds: float = 4,
    workers: int = 4,
) -> dict:
    """Write the videos (layout in the module docstring) and return the summary that goes into videos_info.json.

    `workers` threads share the work (OpenCV, PIL and numpy release the GIL); the files do not depend on it.
    """
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    tasks, num_objects, num_frames = Counter(), 0, 0
    write = lambda i: write_video(out, seed, i, level, image_size, fps, (min_seconds, max_seconds))
    with ThreadPoolExecutor(workers) as pool, open(out / "videos.jsonl", "w") as f:
        for row in pool.map(write, range(num_videos)):
            f.write(json.dumps(row) + "\n")
            tasks.update(a["task"] for a in row["annotations"])
            num_objects += len(row["objects"])
            num_frames += row["num_frames"]
    info = {
        "generator": "nanomolmo2 ShapesWorld videos",
        "version": VERSION,
        "seed": seed,
        "level": level,
        "image_size": image_size,
        "fps": fps,
        "seconds": [min_seconds, max_seconds],
        "videos": num_videos,
        "frames": num_frames,
        "objects": num_objects,
        "annotations": dict(sorted(tasks.items())),
    }
    (out / "videos_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
