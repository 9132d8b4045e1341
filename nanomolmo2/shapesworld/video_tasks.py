"""ShapesWorld video annotations, all built from a video's objects (videos.py has the motion and the grammar).

The caption grammar, read back by `parse_video_caption`:
    sentence  = "A[n] <colour> <shape> " clauses "."      (<colour> = its colour when it appears)
    clauses   = ["appears at <t> seconds"] ("moves from <direction>" | "stays still")
                ["turns <colour> at <t> seconds"] ["disappears at <t> seconds"], joined by ", " and a final " and "
    direction = "left to right" | "right to left" | "top to bottom" | "bottom to top"
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from .motion import MOTIONS, STEP, colour_at, colours_of, track
from .scene import Level
from .tasks import COUNT_STYLES, NOT_COLOURS, SINGULAR, article, either_way, pick, plural_label, queries, yes_no


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
