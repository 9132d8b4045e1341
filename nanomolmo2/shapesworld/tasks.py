"""ShapesWorld's words: every annotation of a scene, built from its `objects`, and the text-only tasks.

- caption: one dense caption in a fixed grammar that `parse_caption` reads back, so captions can be scored:
      "A red circle at the top left, two blue squares at the bottom and a yellow star on the right."
  item = count colour shape place; count is "a"/"an" or a number word (then the shape is plural), place is
  "at the <place>", "on the left", "on the right" or "in the center"; items are joined by ", " and a final " and ".
  An item groups the objects of one colour, shape and place; items follow the reading order of the 3x3 places.
- pointing / counting: plural labels ("red circles", "red shapes", "circles") for everything in the image,
  plus one or two things that are not there (no points, count 0).
- vqa: colour, shape, existence, comparison, left/right, total count and one multiple-choice question,
  with short fixed answers ("Red.", "Yes.", "3.").
- text: simple instructions with one checkable answer ("What is 3 + 4?" -> "7.").

Objects are dicts {"id", "label", "colour", "shape", "center": [x, y], "size", "position"} (see synthetic.py).
All randomness comes from the generator passed in, so the result is a pure function of the scene and the seed.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "hexagon": "hexagons",
    "cross": "crosses",
}
SINGULAR = {**{s: s for s in PLURALS}, **{p: s for s, p in PLURALS.items()}}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
PREPOSITIONS = {"center": "in", "left": "on", "right": "on"}  # "at" for the others: "at the top left"
PLACES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
NOT_COLOURS = {"a", "an", "the", *NUMBERS}  # words that may stand before a shape word but are no colour
# Molmo2's counting style for PixMo-Count and VideoPoint: the points first, then the total ("Counting the <points ...>
# shows a total of 3."). Molmo2 scores a count by the points in its answer (eval/metrics.py); a model that must state
# the number first ("There are 3 <points ...>", count_point) has to count before it points (docs/LOG.md).
COUNT_STYLE = "point_count"


def position_word(x: float, y: float, width: int, height: int) -> str:
    """The place of a point on a 3x3 grid: "top left", "top", ..., "center", ..., "bottom right"."""
    return PLACES[3 * min(int(3 * y / height), 2) + min(int(3 * x / width), 2)]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(objects: list[dict]) -> str:
    """The dense caption: every object with its colour, shape and place, in the grammar of the module docstring."""
    groups = Counter((PLACES.index(o["position"]), o["colour"], o["shape"]) for o in objects)
    items = []
    for (place, colour, shape), n in sorted(groups.items()):
        what = f"{article(colour)} {colour} {shape}" if n == 1 else f"{NUMBERS[n]} {colour} {PLURALS[shape]}"
        where = f"{PREPOSITIONS.get(PLACES[place], 'at')} the {PLACES[place]}"
        items.append(f"{what} {where}")
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return text[0].upper() + text[1:] + "."


def parse_caption(text: str) -> set[tuple[str, str]]:
    """The (colour, shape) pairs a caption names: every shape word with the colour word just before it.

    Never raises; caption accuracy is `parse_caption(prediction) == {(o["colour"], o["shape"]) for o in objects}`.
    """
    words = re.findall(r"[a-z]+", str(text).lower())
    return {(a, SINGULAR[b]) for a, b in zip(words, words[1:], strict=False) if b in SINGULAR and a not in NOT_COLOURS}


def plural_label(colour: str | None, shape: str | None) -> str:
    """A plural label: "red circles", "red shapes" (any shape) or "circles" (any colour)."""
    return " ".join(w for w in (colour, PLURALS[shape] if shape else "shapes") if w)


def matching(objects: list[dict], colour: str | None, shape: str | None) -> list[dict]:
    return [o for o in objects if colour in (None, o["colour"]) and shape in (None, o["shape"])]


def pick(rng: np.random.Generator, items: list, n: int) -> list:
    """Up to n distinct items at random, in their original order."""
    return [items[i] for i in sorted(rng.choice(len(items), size=min(n, len(items)), replace=False))]


def queries(objects: list[dict], colours: tuple, shapes: tuple, rng: np.random.Generator) -> list[tuple]:
    """(colour, shape) queries, None = any: each kind, colour and shape present, then 1-2 that are absent."""
    kinds = sorted({(o["colour"], o["shape"]) for o in objects})
    present = kinds + sorted({(c, None) for c, _ in kinds}) + sorted({(None, s) for _, s in kinds})
    absent = [(c, s) for c in colours for s in shapes if (c, s) not in kinds]
    absent += [(c, None) for c in colours if (c, None) not in present]
    absent += [(None, s) for s in shapes if (None, s) not in present]
    return present + pick(rng, absent, int(rng.integers(1, 3)))


def yes_no(answer: bool) -> str:
    return "Yes." if answer else "No."


def either_way(rng: np.random.Generator, pair: tuple) -> tuple:
    """The pair as it is or swapped: asking both ways round makes yes and no equally likely."""
    return pair if rng.random() < 0.5 else pair[::-1]


def vqa(objects: list[dict], colours: tuple, shapes: tuple, width: int, rng: np.random.Generator) -> list[dict]:
    """Short questions whose answers follow from `objects`; each yes/no kind is asked so that yes and no are even."""
    by_shape = Counter(o["shape"] for o in objects)
    by_colour = Counter(o["colour"] for o in objects)
    by_kind = Counter((o["colour"], o["shape"]) for o in objects)
    qa = []
    # "the circle" / "the red object" only when exactly one object fits
    for o in pick(rng, [o for o in objects if by_shape[o["shape"]] == 1], 2):
        qa.append((f"What colour is the {o['shape']}?", f"{o['colour'].capitalize()}."))
    for o in pick(rng, [o for o in objects if by_colour[o["colour"]] == 1], 2):
        qa.append((f"What shape is the {o['colour']} object?", f"{o['shape'].capitalize()}."))
    # existence: one thing that is there and one that is not
    absent = [(c, s) for c in colours for s in shapes if (c, s) not in by_kind]
    for (c, s), there in [(pick(rng, sorted(by_kind), 1)[0], True), (pick(rng, absent, 1)[0], False)]:
        qa.append((f"Is there {article(c)} {c} {s}?", yes_no(there)))
    # comparison: a pair of shapes whose counts differ, asked either way round
    pairs = [(a, b) for a in shapes for b in shapes if by_shape[a] > by_shape[b]]
    if pairs:
        a, b = either_way(rng, pick(rng, pairs, 1)[0])
        qa.append((f"Are there more {PLURALS[a]} than {PLURALS[b]}?", yes_no(by_shape[a] > by_shape[b])))
    # left/right: two objects named uniquely by their label and clearly apart, asked either way round
    unique = [o for o in objects if by_kind[(o["colour"], o["shape"])] == 1]
    pairs = [(a, b) for a in unique for b in unique if a["center"][0] + 0.05 * width < b["center"][0]]
    if pairs:
        a, b = either_way(rng, pick(rng, pairs, 1)[0])
        qa.append((f"Is the {a['label']} to the left of the {b['label']}?", yes_no(a["center"][0] < b["center"][0])))
    qa.append(("How many shapes are there?", f"{len(objects)}."))
    rows = [{"task": "vqa", "question": q, "answer": a} for q, a in qa]
    missing = [s for s in shapes if s not in by_shape]
    if missing:  # multiple choice: one shape that is there, one that is not
        there = pick(rng, sorted(by_shape), 1)[0]
        options = list(either_way(rng, (there, pick(rng, missing, 1)[0])))
        rows.append({"task": "vqa", "question": "Which shape is in the image?", "options": options, "answer": there})
    return rows


def annotate(objects: list[dict], colours: tuple, shapes: tuple, width: int, rng: np.random.Generator) -> list[dict]:
    """All annotations of one scene: caption, pointing, counting and vqa (DATA_FORMAT.md)."""
    objects = sorted(objects, key=lambda o: (o["center"][1], o["center"][0]))  # points in reading order
    asked = [
        (plural_label(c, s), [o["center"] for o in matching(objects, c, s)])
        for c, s in queries(objects, colours, shapes, rng)
    ]
    rows = [{"task": "caption", "caption": caption(objects)}]
    rows += [{"task": "pointing", "label": label, "points": points} for label, points in asked]
    rows += [
        {
            "task": "counting",
            "label": label,
            "points": points,
            "count": len(points),
            "style": COUNT_STYLE,
        }
        for label, points in asked
    ]
    return rows + vqa(objects, colours, shapes, width, rng)


# ---------------------------------------------------------------------------------------------------------------------
# text-only instructions for the text-only slot of a batch: each a (question, answer) from a generator

WORDS = ["cat", "dog", "sun", "tree", "bird", "fish", "lamp", "book", "moon", "cake", "ship", "apple", "river", "stone"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def word(rng: np.random.Generator) -> str:
    return WORDS[int(rng.integers(len(WORDS)))]


def add_task(rng: np.random.Generator) -> tuple[str, str]:
    a, b = (int(v) for v in rng.integers(0, 20, size=2))
    return f"What is {a} + {b}?", f"{a + b}."


def reverse_task(rng: np.random.Generator) -> tuple[str, str]:
    w = word(rng)
    return f"Spell '{w}' backwards.", w[::-1]


def next_day_task(rng: np.random.Generator) -> tuple[str, str]:
    i = int(rng.integers(7))
    return f"What comes after {DAYS[i]}?", f"{DAYS[(i + 1) % 7]}."


def repeat_task(rng: np.random.Generator) -> tuple[str, str]:
    w, n = word(rng), int(rng.integers(2, 5))
    return f"Repeat the word '{w}' {NUMBERS[n]} times.", " ".join([w] * n)


def length_task(rng: np.random.Generator) -> tuple[str, str]:
    w = word(rng)
    return f"How many letters are in the word '{w}'?", f"{len(w)}."


TEXT_TASKS = [add_task, reverse_task, next_day_task, repeat_task, length_task]


def text_messages(rng: np.random.Generator) -> list[dict]:
    """One user/assistant exchange with a checkable answer."""
    question, answer = TEXT_TASKS[int(rng.integers(len(TEXT_TASKS)))](rng)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
