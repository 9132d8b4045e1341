"""ShapesWorld video annotations, all built from a video's objects as the 2-fps frames show them.

Every answer is decided by the frames a 2-fps reader samples (0, 0.5, ..., the last frame; motion.py puts the
last frame and every event on that grid): what a named frame shows, what changes between frames, and where.
Times are written as the frames' timestamps are printed before them ("1.5", "2.0").

The caption grammar, read back by `parse_video_caption`:
    sentence  = "A[n] <colour> <shape> " clauses "."      (<colour> = its colour when it appears)
    clauses   = ["appears at <t> seconds"] ("moves from <direction>" | "stays still")
                ["turns <colour> at <t> seconds"] ["disappears at <t> seconds"], joined by ", " and a final " and "
    direction = "left to right" | "right to left" | "top to bottom" | "bottom to top"

VQA, about objects named by their shape when no other object has it:
    "What colour is the square at 1.5 seconds?"       -> "Red."
    "Where is the star at 2.0 seconds?"               -> "Top left."        (3x3 places, centers clear of the lines)
    "Where is the star at the end?"                   -> "Bottom."          (the last frame)
    "How many shapes are there at 0.5 seconds?"       -> "2."
    "Which shape appears last?"                       -> "Circle."          (1 s or more after every other)
    "When does the circle turn blue?"                 -> "At 2.5 seconds."  (the first frame in the new colour)
    "Which way does the triangle move?"               -> "Left to right."   (the video's one moving object)
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from .motion import MOTIONS, STEP, colour_at, colours_of, track
from .scene import Level
from .tasks import COUNT_STYLE, NOT_COLOURS, SINGULAR, article, pick, plural_label, position_word, queries

PLACE_MARGIN = 0.04  # of the frame side: a place is asked only when the center is this far from the 3x3 lines


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


def clear_place(x: float, y: float, size: int) -> str | None:
    """The 3x3 place of a center, or None when it is within PLACE_MARGIN of a line between places."""
    lines = (size / 3, 2 * size / 3)
    if min(abs(v - line) for v in (x, y) for line in lines) < PLACE_MARGIN * size:
        return None
    return position_word(x, y, size, size)


def video_vqa(seen: list[tuple], objects: list[dict], size: int, rng: np.random.Generator) -> list[dict]:
    """Short questions whose answers the 2-fps frames show (`seen`: sightings), at most one of each kind."""
    times = sorted({t for t, *_ in seen})
    by_shape = Counter(o["shape"] for o in objects)
    single = [o for o in objects if by_shape[o["shape"]] == 1]  # "the circle"
    sights = {id(o): [(t, colour, xy) for t, o2, colour, xy in seen if o2 is o] for o in objects}
    qa = []
    for o in pick(rng, single, 1):  # a colour at a named frame: before or after a change alike
        phases = [[s for s in sights[id(o)] if s[1] == c] for c in colours_of(o)]
        t, colour, _ = pick(rng, pick(rng, phases, 1)[0], 1)[0]
        qa.append((f"What colour is the {o['shape']} at {t:.1f} seconds?", f"{colour.capitalize()}."))
    placed = [(o, t, where) for o in single for t, _, xy in sights[id(o)] if (where := clear_place(*xy, size))]
    for o, t, where in pick(rng, placed, 1):
        when = "the end" if t == times[-1] else f"{t:.1f} seconds"
        qa.append((f"Where is the {o['shape']} at {when}?", f"{where.capitalize()}."))
    t = times[int(rng.integers(len(times)))]
    qa.append((f"How many shapes are there at {t:.1f} seconds?", f"{sum(s[0] == t for s in seen)}."))
    if len(objects) > 1:
        last = max(objects, key=lambda o: o["appear"])
        if all(o is last or o["appear"] + 1 <= last["appear"] for o in objects):
            qa.append(("Which shape appears last?", f"{last['shape'].capitalize()}."))
    for o in pick(rng, [o for o in single if o["colour_change"]], 1):
        change = o["colour_change"]
        qa.append((f"When does the {o['shape']} turn {change['colour']}?", f"At {change['time']:.1f} seconds."))
    for o in [o for o in single if o["direction"] != "still"]:
        qa.append((f"Which way does the {o['shape']} move?", f"{o['direction'].capitalize()}."))
    return [{"task": "vqa", "question": q, "answer": a} for q, a in qa]


def annotate_video(
    objects: list[dict], lv: Level, fps: float, num_frames: int, size: int, rng: np.random.Generator
) -> list[dict]:
    """All annotations of one video: caption, pointing, counting, tracking and vqa (DATA_FORMAT.md)."""
    seen = sightings(objects, fps, num_frames)
    phases = [{"colour": c, "shape": o["shape"]} for o in objects for c in colours_of(o)]  # what is ever visible
    labels = queries(phases, lv.colours, lv.shapes, rng)  # present (kind, colour, shape) then 1-2 absent
    present = [(c, s) for c, s in labels if any(c in (None, p["colour"]) and s in (None, p["shape"]) for p in phases)]
    absent = [q for q in labels if q not in present]
    kinds = {"caption": [{"task": "caption", "caption": video_caption(objects, num_frames / fps)}]}
    kinds["pointing"], kinds["counting"], kinds["tracking"] = [], [], []
    for c, s in pick(rng, present, 3) + absent[:1]:
        label = plural_label(c, s)
        # Molmo2-VideoPoint's way: every matching object pointed at once, in the first frame it matches
        first: dict[int, list[float]] = {}
        for t, o, colour, xy in seen:
            if c in (None, colour) and s in (None, o["shape"]):
                first.setdefault(id(o), [t, *xy])
        points = list(first.values())
        kinds["pointing"].append({"task": "pointing", "label": label, "points": points})
        counting = {"task": "counting", "label": label, "points": points, "count": len(points), "style": COUNT_STYLE}
        kinds["counting"].append(counting)
    for group in named_groups(objects):
        label = group[0]["label"] if len(group) == 1 else plural_label(group[0]["colour"], group[0]["shape"])
        tracks = {str(o["id"]): [[t, *xy] for t, o2, _, xy in seen if o2 is o] for o in group}
        kinds["tracking"].append({"task": "tracking", "label": label, "tracks": tracks})
    kinds["vqa"] = video_vqa(seen, objects, size, rng)
    # One of each kind in turn: a training example takes a window of consecutive annotations (`max_conversations`),
    # and every window then mixes the kinds.
    order = ("vqa", "pointing", "counting", "tracking", "caption")
    return [kinds[k][i] for i in range(max(map(len, kinds.values()))) for k in order if i < len(kinds[k])]
