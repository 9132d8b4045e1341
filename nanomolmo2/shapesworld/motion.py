"""How ShapesWorld's video objects move: at most one object per video moves (in a straight line, a clear
direction), the others stay still; objects may come in late, leave early and change colour once.

Everything about a frame follows from an object's fields through `track` (where it is, whether it is visible)
and `colour_at`. A video's last frame is at a multiple of STEP (0.5 s) and event times are multiples of STEP, so
the frames a 2-fps reader samples (0, 0.5, ..., the last frame) show every event: an object is visible in at
least three of them, and each of its colours in at least two.
"""

from __future__ import annotations

import math

import numpy as np

from .scene import Level

MAX_OBJECTS = {"easy": 3, "hard": 4}  # fewer and smaller than in images: room for a moving object
SIZE_SCALE = 0.8
STEP = 0.5  # seconds: the grid of event times, of the points and of a 2-fps reader's frames
# direction -> (axis, sign): axis 0 = x, 1 = y; sign +1 = towards larger coordinates, 0 = still
MOTIONS = {"left to right": (0, 1), "right to left": (0, -1), "top to bottom": (1, 1), "bottom to top": (1, -1)}
MOTIONS["still"] = (0, 0)
MOVING = 0.6  # the chance that one object of a video moves
TRAVEL = 0.4  # a moving object travels at least this fraction of the frame: its direction is plain at any resolution


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


def sample_object(
    rng: np.random.Generator, lv: Level, size: int, end: float, duration: float, obj: dict, moves: bool
) -> dict:
    """Give `obj` (id, label, colour, shape, size) a path, a lifetime and maybe a colour change. `end` is the time of
    the video's last frame (a multiple of STEP), `duration` the video's length (its frames show times < duration)."""
    lo, hi = math.ceil(obj["size"]) + 1, size - math.ceil(obj["size"]) - 1  # the centers that keep it inside
    direction = list(MOTIONS)[int(rng.integers(4))] if moves else "still"
    axis, sign = MOTIONS[direction]
    start = rng.uniform(lo, hi, size=2)
    stop = start.copy()
    if sign:
        a = rng.uniform(lo, hi - TRAVEL * size)
        b = rng.uniform(a + TRAVEL * size, hi)
        start[axis], stop[axis] = (a, b) if sign > 0 else (b, a)
        stop[1 - axis] = np.clip(start[1 - axis] + rng.uniform(-0.1, 0.1) * (b - a), lo, hi)  # a little drift
    appear, disappear = 0.0, duration  # visible while appear <= t < disappear: to the last frame by default
    if rng.random() < 0.3:  # comes in later and stays to the end: at least three 2-fps frames
        appear = on_grid(rng, STEP, end - 2 * STEP) or 0.0
    elif rng.random() < 0.2:  # leaves early, after at least three 2-fps frames
        disappear = on_grid(rng, 3 * STEP, end) or disappear
    last = min(disappear - STEP, end)  # the last 2-fps frame that shows it
    change_time = on_grid(rng, appear + 2 * STEP, last - STEP) if rng.random() < 0.35 else None
    others = [c for c in lv.colours if c != obj["colour"]]
    change = None if change_time is None else {"time": change_time, "colour": others[int(rng.integers(len(others)))]}
    return {
        **obj,
        "appear": appear,
        "disappear": disappear,
        "start": [round(float(v), 1) for v in start],
        "end": [round(float(v), 1) for v in stop],
        "direction": direction,
        "colour_change": change,
    }


def place_moving_objects(
    rng: np.random.Generator, lv: Level, max_objects: int, size: int, duration: float, times: np.ndarray
) -> list[dict]:
    """Rejection sampling of paths whose bounding circles keep a gap in every frame (`times`); objects that do not
    fit are dropped (the first always fits). At most one object moves; the last frame is at `times[-1]`."""
    gap = max(2.0, 0.02 * size)
    num = int(rng.integers(1, max_objects + 1))
    mover = int(rng.integers(num)) if rng.random() < MOVING else -1
    placed: list[tuple[dict, np.ndarray, np.ndarray]] = []  # object, centers [T, 2], visible [T]
    radii = sorted(rng.uniform(*lv.size, size=num) * SIZE_SCALE * size, reverse=True)  # big first: they pack better
    for k, r in enumerate(radii):
        if placed and rng.random() < lv.repeat:  # copy an earlier kind, so that counts exceed 1
            other = placed[int(rng.integers(len(placed)))][0]
            colour, shape = other["colour"], other["shape"]
        else:
            colour = lv.colours[int(rng.integers(len(lv.colours)))]
            shape = lv.shapes[int(rng.integers(len(lv.shapes)))]
        r = round(float(r), 1)
        obj = {"id": len(placed) + 1, "label": f"{colour} {shape}", "colour": colour, "shape": shape, "size": r}
        for _ in range(100):
            candidate = sample_object(rng, lv, size, float(times[-1]), duration, obj, moves=k == mover)
            centers, seen = track(candidate, times)
            near = [seen & seen2 & (np.hypot(*(centers - c2).T) < r + o["size"] + gap) for o, c2, seen2 in placed]
            if not np.any(near):  # in no frame are both visible and too close
                placed.append((candidate, centers, seen))
                break
    return [o for o, _, _ in placed]
