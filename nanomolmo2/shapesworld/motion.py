"""How ShapesWorld's video objects move: straight lines at constant speed, lifetimes, one colour change.

Everything about a frame follows from an object's fields through `track` (where it is, whether it is visible)
and `colour_at`. Event times are multiples of STEP (0.5 s) and each phase (visible, one colour) lasts at
least 1 s, so the 2-fps points see it.
"""

from __future__ import annotations

import math

import numpy as np

from .scene import Level

MAX_OBJECTS = {"easy": 3, "hard": 4}  # fewer and smaller than in images: moving objects need room
SIZE_SCALE = 0.8
STEP = 0.5  # seconds: the grid of event times and of the points (2 fps)
# direction -> (axis, sign): axis 0 = x, 1 = y; sign +1 = towards larger coordinates, 0 = still
MOTIONS = {"left to right": (0, 1), "right to left": (0, -1), "top to bottom": (1, 1), "bottom to top": (1, -1)}
MOTIONS["still"] = (0, 0)


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
