"""ShapesWorld videos: the shapes of synthetic.py moving in straight lines, appearing, leaving and changing colour.

A video lasts 2-8 s at a real frame rate (default 10 fps; frame k shows time k / fps) and holds 1-3 (easy) or 1-4
(hard) objects on a still background. An object is visible from `appear` to `disappear` seconds (most for the whole
video) and meanwhile moves at constant speed from `start` to `end`, mostly left/right or up/down, or stays still; it may
change colour once. Event times are multiples of 0.5 s and each phase (visible, one colour) lasts at least 1 s, so the
2-fps points see it. Objects never overlap in any frame; exact per-frame label maps make evaluation exact.

- caption: one sentence per object, in order of appearance, in a fixed grammar that `parse_video_caption` reads back:
      sentence  = "A[n] <colour> <shape> " clauses "."      (<colour> = its colour when it appears)
      clauses   = ["appears at <t> seconds"] ("moves from <direction>" | "stays still")
                  ["turns <colour> at <t> seconds"] ["disappears at <t> seconds"], joined by ", " and a final " and "
      direction = "left to right" | "right to left" | "top to bottom" | "bottom to top"
  e.g. "A red circle moves from left to right. A blue square appears at 2.5 seconds and stays still."
- pointing / counting: [t, x, y] points at t = 0, 0.5, 1, ... < duration of every object that matches the label in
  the frame shown at t (with its colour then); count = the distinct objects that ever match.
- tracking: the [t, x, y] tracks, at 2 fps while visible, of the objects named by their first colour and shape.
- vqa: direction, which appeared first, how many at the end, colour change, one multiple-choice question.

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
import math
import re
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from .synthetic import BACKGROUNDS, COLOURS, LEVELS, Level, draw_distractors, draw_object
from .synthetic_tasks import (
    COUNT_STYLES,
    NOT_COLOURS,
    SINGULAR,
    article,
    either_way,
    pick,
    plural_label,
    queries,
    yes_no,
)

__all__ = ["MOTIONS", "Video", "track", "colour_at", "timestamps", "make_video", "video_row", "read_video"]
__all__ += ["parse_video_caption", "write_shapesworld_videos"]

VERSION = 1
MAX_OBJECTS = {"easy": 3, "hard": 4}  # fewer and smaller than in images: moving objects need room
SIZE_SCALE = 0.8
STEP = 0.5  # seconds: the grid of event times and of the points (2 fps)
# direction -> (axis, sign): axis 0 = x, 1 = y; sign +1 = towards larger coordinates, 0 = still
MOTIONS = {"left to right": (0, 1), "right to left": (0, -1), "top to bottom": (1, 1), "bottom to top": (1, -1)}
MOTIONS["still"] = (0, 0)


@dataclass
class Video:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    masks: np.ndarray  # uint8 [T, H, W] label maps: k = object with "id" k, 0 = background
    times: np.ndarray  # float [T]: frame k shows time k / fps
    objects: list[dict]
    fps: float


# ---------------------------------------------------------------------------------------------------------------------
# motion: everything about a frame follows from the objects' fields through these two functions


def track(obj: dict, times) -> tuple[np.ndarray, np.ndarray]:
    """The object's centers [T, 2] and visibility [T] at `times` (seconds): constant speed while visible."""
    times = np.asarray(times, dtype=np.float64)
    start, end = np.asarray(obj["start"]), np.asarray(obj["end"])
    f = np.clip((times - obj["appear"]) / (obj["disappear"] - obj["appear"]), 0, 1)
    return start + f[:, None] * (end - start), (obj["appear"] <= times) & (times < obj["disappear"])


def colour_at(obj: dict, t: float) -> str:
    change = obj["colour_change"]
    return change["colour"] if change and t >= change["time"] else obj["colour"]


def colours_of(obj: dict) -> list[str]:
    """Every colour the object has while visible."""
    return [obj["colour"]] + ([obj["colour_change"]["colour"]] if obj["colour_change"] else [])


def on_grid(rng: np.random.Generator, lo: float, hi: float) -> float | None:
    """A random multiple of STEP in [lo, hi], or None when there is none."""
    first, last = math.ceil(lo / STEP - 1e-9), math.floor(hi / STEP + 1e-9)
    return None if last < first else STEP * int(rng.integers(first, last + 1))


def sample_object(rng: np.random.Generator, lv: Level, size: int, duration: float, obj: dict) -> dict:
    """Give `obj` (id, label, colour, shape, size) a random path, lifetime and colour change."""
    lo, hi = math.ceil(obj["size"]) + 1, size - math.ceil(obj["size"]) - 1  # the centers that keep it inside
    direction = list(MOTIONS)[int(rng.integers(len(MOTIONS)))]
    axis, sign = MOTIONS[direction]
    start = rng.uniform(lo, hi, size=2)
    end = start.copy()
    if sign:
        a = rng.uniform(lo, hi - 0.3 * size)  # moves at least 0.3 of the frame, so that the direction is plain
        b = rng.uniform(a + 0.3 * size, hi)
        start[axis], end[axis] = (a, b) if sign > 0 else (b, a)
        end[1 - axis] = np.clip(start[1 - axis] + rng.uniform(-0.15, 0.15) * (b - a), lo, hi)  # a little drift
    appear, disappear = 0.0, duration
    if rng.random() < 0.25:  # comes in later, and stays at least 1.5 s
        appear = on_grid(rng, STEP, duration - 1.5) or 0.0
    if rng.random() < 0.2:  # leaves early
        disappear = on_grid(rng, appear + 1.5, duration - STEP) or duration
    change_time = on_grid(rng, appear + 1, disappear - 1) if rng.random() < 0.3 else None
    others = [c for c in lv.colours if c != obj["colour"]]
    change = None if change_time is None else {"time": change_time, "colour": others[int(rng.integers(len(others)))]}
    return {
        **obj,
        "appear": appear,
        "disappear": disappear,
        "start": [round(float(v), 1) for v in start],
        "end": [round(float(v), 1) for v in end],
        "direction": direction,
        "colour_change": change,
    }


def place_moving_objects(
    rng: np.random.Generator, lv: Level, max_objects: int, size: int, duration: float, times: np.ndarray
) -> list[dict]:
    """Rejection sampling of paths whose bounding circles keep a gap in every frame; objects that do not fit are
    dropped (the first always fits)."""
    gap = max(2.0, 0.02 * size)
    num = int(rng.integers(1, max_objects + 1))
    placed: list[tuple[dict, np.ndarray, np.ndarray]] = []  # object, centers [T, 2], visible [T]
    for r in sorted(rng.uniform(*lv.size, size=num) * SIZE_SCALE * size, reverse=True):  # big first: they pack better
        if placed and rng.random() < lv.repeat:  # copy an earlier kind, so that counts exceed 1
            other = placed[int(rng.integers(len(placed)))][0]
            colour, shape = other["colour"], other["shape"]
        else:
            colour = lv.colours[int(rng.integers(len(lv.colours)))]
            shape = lv.shapes[int(rng.integers(len(lv.shapes)))]
        r = round(float(r), 1)
        obj = {"id": len(placed) + 1, "label": f"{colour} {shape}", "colour": colour, "shape": shape, "size": r}
        for _ in range(100):
            candidate = sample_object(rng, lv, size, duration, obj)
            centers, seen = track(candidate, times)
            near = [seen & seen2 & (np.hypot(*(centers - c2).T) < r + o["size"] + gap) for o, c2, seen2 in placed]
            if not np.any(near):  # in no frame are both visible and too close
                placed.append((candidate, centers, seen))
                break
    return [o for o, _, _ in placed]


def make_video(
    seed: int, index: int, level: str = "easy", size: int = 112, fps: float = 10, seconds: tuple = (2, 8)
) -> Video:
    """Video `index` of the dataset `seed` (both >= 0): its own random generator, independent of the other videos.
    `size` is the frame side in pixels, `seconds` the range of durations."""
    rng = np.random.default_rng([seed, index, 3])
    lv = LEVELS[level]
    num_frames = max(1, round(rng.uniform(*seconds) * fps))
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
        noise = rng.standard_normal((size, size, 3), dtype=np.float32) * sigma
        frames[k] = np.clip(np.asarray(frame) + noise, 0, 255)
        masks[k] = np.asarray(mask)
    return Video(frames, masks, times, objects, fps)


# ---------------------------------------------------------------------------------------------------------------------
# annotations, all built from the objects


def timestamps(duration: float) -> list[float]:
    """The 2-fps times of points: 0, 0.5, 1, ... < duration."""
    return [round(STEP * i, 1) for i in range(math.ceil(duration / STEP))]


def sightings(objects: list[dict], fps: float, num_frames: int) -> list[tuple[float, dict, str, list[float]]]:
    """(t, object, its colour, its center [x, y]) of every object visible in the frame shown at each 2-fps time t,
    in time then reading order."""
    seen = []
    for t in timestamps(num_frames / fps):
        shown = min(round(t * fps), num_frames - 1) / fps  # the time of the frame that a reader of t picks
        for o in objects:
            centers, visible = track(o, [shown])
            if visible[0]:
                seen.append((t, o, colour_at(o, shown), [round(float(v), 1) for v in centers[0]]))
    return sorted(seen, key=lambda s: (s[0], s[3][1], s[3][0]))


def spoken_time(t: float) -> str:
    return f"{t:g} second" + ("" if t == 1 else "s")


def video_caption(objects: list[dict], duration: float) -> str:
    """One sentence per object, in the grammar of the module docstring."""
    sentences = []
    for o in sorted(objects, key=lambda o: (o["appear"], o["id"])):
        clauses = [f"appears at {spoken_time(o['appear'])}"] if o["appear"] > 0 else []
        clauses.append("stays still" if o["direction"] == "still" else f"moves from {o['direction']}")
        if o["colour_change"]:
            clauses.append(f"turns {o['colour_change']['colour']} at {spoken_time(o['colour_change']['time'])}")
        if o["disappear"] < duration:
            clauses.append(f"disappears at {spoken_time(o['disappear'])}")
        what = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        sentences.append(f"{article(o['colour']).capitalize()} {o['colour']} {o['shape']} {what}.")
    return " ".join(sentences)


DIRECTION_RE = re.compile("from (" + "|".join(d for d in MOTIONS if d != "still") + ")")


def parse_video_caption(text: str) -> set[tuple[str, str, str]]:
    """The (colour, shape, direction) of every object a caption names: each shape word with the colour word just
    before it and the direction of its sentence ("still" when the sentence names none).

    Never raises; caption accuracy is `parse_video_caption(prediction) == {(colour, shape, direction) of objects}`.
    """
    found = set()
    for sentence in re.split(r"\.(?!\d)", str(text).lower()):  # "2.5 seconds" does not end a sentence
        move = DIRECTION_RE.search(sentence)
        words = re.findall(r"[a-z]+", sentence)
        for a, b in zip(words, words[1:], strict=False):
            if b in SINGULAR and a not in NOT_COLOURS:
                found.add((a, SINGULAR[b], move.group(1) if move else "still"))
    return found


def named_groups(objects: list[dict]) -> list[list[dict]]:
    """Objects grouped by first colour and shape, where that label names them alone: no other object of the shape
    ever has the colour."""
    groups = []
    for colour, shape in sorted({(o["colour"], o["shape"]) for o in objects}):
        group = [o for o in objects if (o["colour"], o["shape"]) == (colour, shape)]
        others = [o for o in objects if o["shape"] == shape and o not in group]
        if all(colour not in colours_of(o) for o in others):
            groups.append(group)
    return groups


def video_vqa(objects: list[dict], lv: Level, last_time: float, rng: np.random.Generator) -> list[dict]:
    """Short questions whose answers follow from `objects`."""
    named = [g[0] for g in named_groups(objects) if len(g) == 1]  # "the red circle"
    qa = [(f"Which way does the {o['label']} move?", f"{o['direction'].capitalize()}.") for o in pick(rng, named, 2)]
    pairs = [(a, b) for a in named for b in named if a["appear"] + 1 <= b["appear"]]
    if pairs:  # clearly apart in time, asked either way round
        first, second = pick(rng, pairs, 1)[0]
        a, b = either_way(rng, (first, second))
        qa.append((f"Which appeared first, the {a['label']} or the {b['label']}?", f"The {first['label']}."))
    at_end = sum(bool(track(o, [last_time])[1][0]) for o in objects)
    qa.append(("How many shapes are there at the end of the video?", f"{at_end}."))
    by_shape = Counter(o["shape"] for o in objects)
    single = [o for o in objects if by_shape[o["shape"]] == 1]  # "the star"
    for changes in (True, False):  # one that changes colour and one that does not, when there are
        for o in pick(rng, [o for o in single if bool(o["colour_change"]) == changes], 1):
            qa.append((f"Does the {o['shape']} change colour?", yes_no(changes)))
    rows = [{"task": "vqa", "question": q, "answer": a} for q, a in qa]
    if named:  # multiple choice: an object's direction and another one
        o = pick(rng, named, 1)[0]
        question, answer, wrong = f"Which way does the {o['label']} move?", o["direction"], list(MOTIONS)
    else:  # no object has a name of its own: a shape that is there and one that is not
        question, answer, wrong = "Which shape is in the video?", pick(rng, sorted(by_shape), 1)[0], lv.shapes
    options = list(either_way(rng, (answer, pick(rng, [w for w in wrong if w not in (answer, *by_shape)], 1)[0])))
    return rows + [{"task": "vqa", "question": question, "options": options, "answer": answer}]


def annotate_video(objects: list[dict], lv: Level, fps: float, num_frames: int, rng: np.random.Generator) -> list[dict]:
    """All annotations of one video: caption, pointing, counting, tracking and vqa (DATA_FORMAT.md)."""
    seen = sightings(objects, fps, num_frames)
    phases = [{"colour": c, "shape": o["shape"]} for o in objects for c in colours_of(o)]  # what is ever visible
    labels = queries(phases, lv.colours, lv.shapes, rng)  # present (kind, colour, shape) then 1-2 absent
    present = [(c, s) for c, s in labels if any(c in (None, p["colour"]) and s in (None, p["shape"]) for p in phases)]
    absent = [q for q in labels if q not in present]
    rows = [{"task": "caption", "caption": video_caption(objects, num_frames / fps)}]
    first_style = int(rng.integers(2))  # counting styles alternate, starting at random
    for k, (c, s) in enumerate(pick(rng, present, 3) + absent[:1]):
        label = plural_label(c, s)
        points = [[t, *xy] for t, o, colour, xy in seen if c in (None, colour) and s in (None, o["shape"])]
        count = sum(s in (None, o["shape"]) and any(c in (None, x) for x in colours_of(o)) for o in objects)
        rows.append({"task": "pointing", "label": label, "points": points})
        style = COUNT_STYLES[(first_style + k) % 2]
        rows.append({"task": "counting", "label": label, "points": points, "count": count, "style": style})
    for group in named_groups(objects):
        label = group[0]["label"] if len(group) == 1 else plural_label(group[0]["colour"], group[0]["shape"])
        tracks = {str(o["id"]): [[t, *xy] for t, o2, _, xy in seen if o2 is o] for o in group}
        rows.append({"task": "tracking", "label": label, "tracks": tracks})
    return rows + video_vqa(objects, lv, (num_frames - 1) / fps, rng)


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
        "annotations": annotate_video(video.objects, LEVELS[level], video.fps, num_frames, rng),
        "objects": video.objects,
        "masks": f"masks/{index:06d}.npz",
    }


# ---------------------------------------------------------------------------------------------------------------------
# files


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video file into RGB frames, uint8 [T, H, W, 3]."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


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
    decoded = read_video(path)
    if decoded.shape[:3] != video.masks.shape:
        raise RuntimeError(f"{path} decodes to frames {decoded.shape[:3]}, not {video.masks.shape}")
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
    max_seconds: float = 8,
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
