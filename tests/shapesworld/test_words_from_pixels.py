"""ShapesWorld's words checked against what the pixels show, with tables written here, not the generator's.

Positions come from each object's mask centroid on a hard-coded 3 x 3 grid, colours from the mean RGB inside
its mask matched to a hard-coded palette, counts from the distinct mask ids, and in videos, at the frames a 2-fps
reader picks: colours, places and counts of a named frame, the first frame an object or a new colour shows in, and
directions from how the mask centroid moves between the first and last frames the object is visible in.
"""

import re

import numpy as np
import pytest

from nanomolmo2.shapesworld.images import make_row
from nanomolmo2.shapesworld.videos import make_video, video_row

GRID = [["top left", "top", "top right"], ["left", "center", "right"], ["bottom left", "bottom", "bottom right"]]
PALETTE = {  # what each colour name looks like, as RGB
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 0),
    "purple": (140, 40, 180),
    "orange": (250, 120, 0),
    "cyan": (0, 190, 210),
}
NUMBER_WORDS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def centroid(mask: np.ndarray, object_id: int) -> tuple[float, float]:
    rows, cols = np.nonzero(mask == object_id)
    return cols.mean() + 0.5, rows.mean() + 0.5  # pixel centres


def place(mask: np.ndarray, object_id: int) -> str:
    x, y = centroid(mask, object_id)
    height, width = mask.shape
    return GRID[min(int(3 * y / height), 2)][min(int(3 * x / width), 2)]


def colour_name(image: np.ndarray, mask: np.ndarray, object_id: int) -> str:
    inside = image[mask == object_id].astype(float).mean(0)
    return min(PALETTE, key=lambda name: np.linalg.norm(inside - np.array(PALETTE[name])))


PLACE = r"((?:top |bottom )?(?:left|right)|top|bottom|center)"
ITEM = re.compile(r"\b(a|an|two|three|four|five|six) (\w+) (\w+) (?:at|on|in) the " + PLACE + r"\b")


def caption_items(caption: str) -> dict[tuple[str, str, str], int]:
    """{(colour, singular shape, place): count} of a caption, read with this test's own pattern."""
    items = {}
    for number, colour, shape, where in ITEM.findall(caption.lower()):
        count = NUMBER_WORDS[number]
        if count > 1:  # plural: "crosses" -> "cross", "circles" -> "circle"
            shape = shape[:-2] if shape.endswith("sses") else shape[:-1]
        items[(colour, shape, where)] = count
    return items


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_image_captions_say_what_the_pixels_show(level):
    for index in range(30):
        row, scene = make_row(0, index, level, 112)
        image, mask = np.asarray(scene.image), np.asarray(scene.mask)
        ids = sorted(set(np.unique(mask).tolist()) - {0})
        seen = {}  # (colour, shape, place) -> count, from the pixels
        for obj in row["objects"]:
            key = (colour_name(image, mask, obj["id"]), obj["shape"], place(mask, obj["id"]))
            seen[key] = seen.get(key, 0) + 1
        assert len(ids) == len(row["objects"])  # every object is drawn, and nothing else
        caption = next(a["caption"] for a in row["annotations"] if a["task"] == "caption")
        assert caption_items(caption) == seen, (caption, seen)


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_image_counts_and_vqa_positions_follow_the_pixels(level):
    for index in range(30):
        row, scene = make_row(0, index, level, 112)
        mask = np.asarray(scene.mask)
        for a in row["annotations"]:
            if a["task"] == "vqa" and a["question"] == "How many shapes are there?":
                assert a["answer"] == f"{len(set(np.unique(mask).tolist()) - {0})}."
            if a["task"] == "vqa" and a["question"].startswith("Is the ") and " to the left of the " in a["question"]:
                first, second = re.match(r"Is the (.+) to the left of the (.+)\?", a["question"]).groups()
                by_label = {o["label"]: o["id"] for o in row["objects"]}
                left = centroid(mask, by_label[first])[0] < centroid(mask, by_label[second])[0]
                assert a["answer"] == ("Yes." if left else "No."), a


def direction_from_masks(masks: np.ndarray, object_id: int) -> str:
    """ "left to right" ... from the centroids in the first and last frames showing the object; "still" when it
    moves less than 2 pixels."""
    frames = [k for k in range(len(masks)) if (masks[k] == object_id).any()]
    (x0, y0), (x1, y1) = centroid(masks[frames[0]], object_id), centroid(masks[frames[-1]], object_id)
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) < 2:
        return "still"
    if abs(dx) >= abs(dy):
        return "left to right" if dx > 0 else "right to left"
    return "top to bottom" if dy > 0 else "bottom to top"


def video_answer(question: str, frames: np.ndarray, masks: np.ndarray, fps: float, shapes: dict[int, str]) -> str:
    """The answer to a video question as the 2-fps frames show it, from pixels and masks; `shapes` says which shape
    each mask id is (the object "the <shape>" is the only id with that shape)."""
    named = {s: i for i, s in shapes.items() if list(shapes.values()).count(s) == 1}
    grid = [k for k in range(len(masks)) if (k / fps) * 2 == int((k / fps) * 2)]  # the frames a 2-fps reader picks
    if m := re.fullmatch(r"What colour is the (\w+) at (\d\.\d) seconds\?", question):
        k = round(float(m.group(2)) * fps)
        return colour_name(frames[k], masks[k], named[m.group(1)]).capitalize() + "."
    if m := re.fullmatch(r"Where is the (\w+) at (?:(\d\.\d) seconds|the end)\?", question):
        k = round(float(m.group(2)) * fps) if m.group(2) else len(masks) - 1
        return place(masks[k], named[m.group(1)]).capitalize() + "."
    if m := re.fullmatch(r"How many shapes are there at (\d\.\d) seconds\?", question):
        return f"{len(set(np.unique(masks[round(float(m.group(1)) * fps)]).tolist()) - {0})}."
    if question == "Which shape appears last?":
        first_seen = {i: next(k for k in grid if (masks[k] == i).any()) for i in set(np.unique(masks).tolist()) - {0}}
        latest = max(first_seen, key=first_seen.get)
        return shapes[latest].capitalize() + "."
    if m := re.fullmatch(r"When does the (\w+) turn (\w+)\?", question):
        i = named[m.group(1)]
        k = next(k for k in grid if (masks[k] == i).any() and colour_name(frames[k], masks[k], i) == m.group(2))
        return f"At {k / fps:.1f} seconds."
    if m := re.fullmatch(r"Which way does the (\w+) move\?", question):
        return direction_from_masks(masks, named[m.group(1)]).capitalize() + "."
    raise AssertionError(f"a question this test does not know: {question}")


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_video_answers_follow_the_pixels(level):
    asked = 0
    for index in range(20):
        video = make_video(0, index, level, size=112, seconds=(2, 4))
        row = video_row(0, index, level, video)
        shapes = {o["id"]: o["shape"] for o in row["objects"]}
        for a in row["annotations"]:
            if a["task"] == "vqa":
                assert video_answer(a["question"], video.frames, video.masks, video.fps, shapes) == a["answer"], a
                asked += 1
        caption = next(a["caption"] for a in row["annotations"] if a["task"] == "caption")
        for obj in row["objects"]:
            said = "stays still" if direction_from_masks(video.masks, obj["id"]) == "still" else "moves from "
            assert said in caption
    assert asked >= 60
