"""ShapesWorld: determinism, masks and points, every annotation checked against the objects, captions, the CLI."""

import functools
import json
import random
import re
import string

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nanomolmo2.cli import main
from nanomolmo2.shapesworld.images import make_row, text_row, write_shapesworld
from nanomolmo2.shapesworld.scene import COLOURS, LEVELS, SHAPES, draw_object
from nanomolmo2.shapesworld.tasks import PLURALS, SINGULAR, caption, parse_caption, position_word


@functools.cache
def rows(level: str, n: int, size: int = 56) -> list:
    """(row, scene) of images 0..n-1 of seed 0, shared by the tests."""
    return [make_row(0, i, level, size) for i in range(n)]


def files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def query(label: str) -> tuple:
    """ "red circles" -> ("red", "circle"), "red shapes" -> ("red", None), "circles" -> (None, "circle")."""
    *colour, shape = label.split()
    return (colour[0] if colour else None), (None if shape == "shapes" else SINGULAR[shape])


def matches(obj: dict, colour, shape) -> bool:
    return colour in (None, obj["colour"]) and shape in (None, obj["shape"])


def annotations(row: dict, task: str) -> list:
    return [a for a in row["annotations"] if a["task"] == task]


def test_same_seed_same_bytes_and_other_seed_other_bytes(tmp_path):
    write_shapesworld(tmp_path / "a", 6, seed=3, level="hard", image_size=64, workers=1)
    write_shapesworld(tmp_path / "b", 6, seed=3, level="hard", image_size=64, workers=3)
    write_shapesworld(tmp_path / "c", 6, seed=4, level="hard", image_size=64)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 6 + 6 + 3  # images, masks, images.jsonl, text.jsonl, info.json
    assert a == b
    assert a["images.jsonl"] != c["images.jsonl"]
    assert all(a[f"images/{i:06d}.png"] != c[f"images/{i:06d}.png"] for i in range(6))


def test_image_does_not_depend_on_the_number_of_images(tmp_path):
    write_shapesworld(tmp_path / "few", 2, seed=5, image_size=64)
    write_shapesworld(tmp_path / "many", 5, seed=5, image_size=64)
    few, many = files(tmp_path / "few"), files(tmp_path / "many")
    assert many["images.jsonl"].startswith(few["images.jsonl"])
    assert all(
        few[f"{kind}/{i:06d}.png"] == many[f"{kind}/{i:06d}.png"] for kind in ("images", "masks") for i in range(2)
    )


@pytest.mark.parametrize(
    "level, size, n", [("easy", 56, 40), ("hard", 56, 40), ("easy", 224, 15), ("hard", 224, 15), ("hard", 1024, 2)]
)
def test_masks_objects_and_points(level, size, n):
    for row, scene in rows(level, n, size):
        mask = np.asarray(scene.mask)
        objects = row["objects"]
        assert scene.image.mode == "RGB" and scene.image.size == scene.mask.size == (size, size)
        assert [o["id"] for o in objects] == list(range(1, len(objects) + 1))
        assert set(np.unique(mask)) == {0, *range(1, len(objects) + 1)}
        for o in objects:
            x, y = o["center"]
            assert mask[int(y), int(x)] == mask[round(y), round(x)] == o["id"]
            assert o["size"] <= x <= size - 1 - o["size"] and o["size"] <= y <= size - 1 - o["size"]
            assert o["label"] == f"{o['colour']} {o['shape']}" and o["position"] == position_word(x, y, size, size)
            # drawn alone, the object covers exactly its mask pixels: nothing overlaps it or draws over it
            alone = Image.new("L", (size, size), 0)
            draw_object(ImageDraw.Draw(alone), o, 1)
            assert np.array_equal(np.asarray(alone) == 1, mask == o["id"])
            assert (mask == o["id"]).sum() >= o["size"] ** 2  # reasonably large
        for a in annotations(row, "pointing"):
            colour, shape = query(a["label"])
            expected = sorted(tuple(o["center"]) for o in objects if matches(o, colour, shape))
            assert sorted(map(tuple, a["points"])) == expected
            for x, y in a["points"]:
                assert matches(objects[mask[int(y), int(x)] - 1], colour, shape)


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_counting_and_none_queries(level):
    styles = set()
    for row, _ in rows(level, 100):
        objects, vocabulary = row["objects"], LEVELS[level]
        pointing, counting = annotations(row, "pointing"), annotations(row, "counting")
        assert [a["label"] for a in pointing] == [a["label"] for a in counting]
        for a in counting:
            colour, shape = query(a["label"])
            assert a["count"] == len(a["points"]) == sum(matches(o, colour, shape) for o in objects)
            styles.add(a["style"])
        empty = [a for a in pointing if not a["points"]]
        assert 1 <= len(empty) <= 2
        for a in empty:
            colour, shape = query(a["label"])
            assert colour in (None, *vocabulary.colours) and shape in (None, *vocabulary.shapes)
            assert not any(matches(o, colour, shape) for o in objects)
    assert styles == {"point_count"}  # Molmo2's PixMo-Count style: points, then the total


ITEM = r"(a|an|two|three|four|five|six) [a-z]+ [a-z]+ (at the (top left|top|top right|bottom left|bottom|bottom right)|on the (left|right)|in the center)"  # noqa: E501
GRAMMAR = rf"{ITEM}((, {ITEM})* and {ITEM})?\."


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_captions_follow_the_grammar_and_parse_back(level):
    for row, _ in rows(level, 150):
        (text,) = [a["caption"] for a in annotations(row, "caption")]
        assert text[0].isupper() and re.fullmatch(GRAMMAR, text[0].lower() + text[1:]), text
        assert parse_caption(text) == {(o["colour"], o["shape"]) for o in row["objects"]}


def test_caption_example():
    objects = [
        {"colour": "blue", "shape": "square", "position": "bottom"},
        {"colour": "red", "shape": "circle", "position": "top left"},
        {"colour": "yellow", "shape": "star", "position": "right"},
        {"colour": "blue", "shape": "square", "position": "bottom"},
        {"colour": "orange", "shape": "cross", "position": "center"},
    ]
    expected = (
        "A red circle at the top left, an orange cross in the center, a yellow star on the right"
        " and two blue squares at the bottom."
    )
    assert caption(objects) == expected
    assert caption(objects[1:2]) == "A red circle at the top left."
    assert parse_caption(expected) == {("red", "circle"), ("orange", "cross"), ("yellow", "star"), ("blue", "square")}


def test_parse_caption_is_robust():
    assert parse_caption("two Blue SQUARES, and an orange hexagon!") == {("blue", "square"), ("orange", "hexagon")}
    assert parse_caption("A circle and three stars.") == set()
    rand = random.Random(0)
    texts = ["", ".", "and and ,", None, 42, "é∂ƒ©", "a red"] + [
        row["annotations"][0]["caption"] for row, _ in rows("hard", 30)
    ]
    texts += ["".join(rand.choices(string.printable, k=rand.randint(0, 80))) for _ in range(100)]
    for text in texts:
        shuffled = str(text).split()
        rand.shuffle(shuffled)
        for variant in (text, " ".join(shuffled), str(text)[: len(str(text)) // 2]):
            pairs = parse_caption(variant)
            assert isinstance(pairs, set) and all(shape in PLURALS for _, shape in pairs)


def check_vqa(row: dict, a: dict) -> None:
    """Recompute the answer of one vqa annotation from the objects."""
    objects, q = row["objects"], a["question"]
    count = lambda colour=None, shape=None: sum(matches(o, colour, shape) for o in objects)  # noqa: E731
    yes = lambda answer: "Yes." if answer else "No."  # noqa: E731
    if m := re.fullmatch(r"What colour is the (\w+)\?", q):
        (o,) = [o for o in objects if o["shape"] == m[1]]
        assert a["answer"] == o["colour"].capitalize() + "."
    elif m := re.fullmatch(r"What shape is the (\w+) object\?", q):
        (o,) = [o for o in objects if o["colour"] == m[1]]
        assert a["answer"] == o["shape"].capitalize() + "."
    elif m := re.fullmatch(r"Is there an? (\w+) (\w+)\?", q):
        assert a["answer"] == yes(count(m[1], m[2]) > 0)
    elif m := re.fullmatch(r"Are there more (\w+) than (\w+)\?", q):
        a_count, b_count = count(shape=SINGULAR[m[1]]), count(shape=SINGULAR[m[2]])
        assert a_count != b_count and a["answer"] == yes(a_count > b_count)
    elif m := re.fullmatch(r"Is the (\w+) (\w+) to the left of the (\w+) (\w+)\?", q):
        left = [o for o in objects if o["label"] == f"{m[1]} {m[2]}"]
        right = [o for o in objects if o["label"] == f"{m[3]} {m[4]}"]
        assert len(left) == len(right) == 1 and a["answer"] == yes(left[0]["center"][0] < right[0]["center"][0])
    elif q == "How many shapes are there?":
        assert a["answer"] == f"{len(objects)}."
    else:
        assert q == "Which shape is in the image?" and a["answer"] in a["options"] and len(a["options"]) == 2
        assert [count(shape=s) > 0 for s in a["options"]].count(True) == 1 and count(shape=a["answer"]) > 0


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_vqa_answers_match_the_objects_and_yes_no_is_balanced(level):
    answers = []
    for row, _ in rows(level, 200):
        vqa = annotations(row, "vqa")
        assert "How many shapes are there?" in [a["question"] for a in vqa]
        assert {"Yes.", "No."} <= {a["answer"] for a in vqa if a["question"].startswith("Is there")}
        for a in vqa:
            check_vqa(row, a)
            answers.append(a["answer"])
    yes, no = answers.count("Yes."), answers.count("No.")
    assert 0.4 < yes / (yes + no) < 0.6


def test_easy_level_constraints():
    size, counts, used = 112, set(), set()
    for row, scene in rows("easy", 300, size):
        objects = row["objects"]
        counts.add(len(objects))
        image, mask = np.asarray(scene.image).astype(float), np.asarray(scene.mask)
        for o in objects:
            assert 0.12 * size - 0.05 <= o["size"] <= 0.22 * size + 0.05
            used.add((o["colour"], o["shape"]))
            # the object is painted in its palette colour (the noise has mean zero)
            assert np.abs(image[mask == o["id"]].mean(0) - COLOURS[o["colour"]]).max() < 8
        assert image[mask == 0].mean() > 200  # plain light background
    assert counts == {1, 2, 3, 4}
    assert {c for c, _ in used} == {"red", "green", "blue", "yellow", "purple"}
    assert {s for _, s in used} == {"circle", "square", "triangle", "star"}
    palette = np.array([COLOURS[c] for c in LEVELS["easy"].colours], dtype=float)
    distances = np.linalg.norm(palette[:, None] - palette[None], axis=-1)
    assert distances[~np.eye(len(palette), dtype=bool)].min() > 120  # clearly distinct


def test_hard_level_variety():
    size, counts, sizes, colours, shapes = 56, set(), [], set(), set()
    for row, _ in rows("hard", 200, size):
        counts.add(len(row["objects"]))
        sizes += [o["size"] / size for o in row["objects"]]
        colours |= {o["colour"] for o in row["objects"]}
        shapes |= {o["shape"] for o in row["objects"]}
    assert max(counts) > 4 and min(counts) == 1
    assert 0.08 - 0.01 <= min(sizes) < 0.12 and max(sizes) <= 0.2 + 0.01
    assert len(colours) >= 6 and len(shapes) >= 4 and shapes <= set(SHAPES) and colours <= set(COLOURS)


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TEXT_ANSWERS = {  # question pattern -> the answer, recomputed
    r"What is (\d+) \+ (\d+)\?": lambda m: f"{int(m[1]) + int(m[2])}.",
    r"Spell '(\w+)' backwards\.": lambda m: m[1][::-1],
    r"What comes after (\w+)\?": lambda m: DAYS[(DAYS.index(m[1]) + 1) % 7] + ".",
    r"Repeat the word '(\w+)' (two|three|four) times\.": lambda m: " ".join(
        [m[1]] * (2 + ["two", "three", "four"].index(m[2]))
    ),
    r"How many letters are in the word '(\w+)'\?": lambda m: f"{len(m[1])}.",
}


def test_text_rows_have_checkable_answers():
    seen = set()
    for i in range(100):
        row = text_row(7, i)
        assert row["id"] == f"shapes-text-7-{i}" and "image" not in row
        ((user, assistant),) = [a["messages"] for a in row["annotations"] if a["task"] == "chat"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        ((pattern, m),) = [(p, m) for p in TEXT_ANSWERS if (m := re.fullmatch(p, user["content"]))]
        assert assistant["content"] == TEXT_ANSWERS[pattern](m)
        seen.add(pattern)
    assert seen == set(TEXT_ANSWERS)


def test_cli_writes_the_files(tmp_path, capsys):
    out = tmp_path / "sw"
    main(["synth", "--out", str(out), "--images", "3", "--seed", "1", "--image-size", "64", "--text", "2"])
    assert "3 images" in capsys.readouterr().out
    lines = (out / "images.jsonl").read_text().splitlines()
    texts = [json.loads(line) for line in (out / "text.jsonl").read_text().splitlines()]
    info = json.loads((out / "info.json").read_text())
    assert len(lines) == 3 and len(texts) == 2 and info["images"] == 3 and info["text"] == 2 and info["seed"] == 1
    for i, row in enumerate(map(json.loads, lines)):
        assert row["id"] == f"shapes-1-{i}" and (row["width"], row["height"]) == (64, 64)
        assert Image.open(out / row["image"]).size == (64, 64) and Image.open(out / row["masks"]).mode == "L"
    assert set(info["annotations"]) == {"caption", "pointing", "counting", "vqa"}
