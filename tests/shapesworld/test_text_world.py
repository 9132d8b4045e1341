"""ShapesWorld as text: the grid's words, the scene on the grid, and the layout shared token for token with the
vision-language model's examples (what makes a text-pretrained language model readable by the connector)."""

import functools
import json

import numpy as np
import pytest
from PIL import Image

from nanomolmo2.data.data_root import build_mixture
from nanomolmo2.data.examples import tokenize_example
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.tokenizer import Tokenizer
from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.scene import LEVELS
from nanomolmo2.shapesworld.tasks import parse_caption
from nanomolmo2.shapesworld.text_world import (
    COLOUR_LETTERS,
    GRID_END,
    GRID_START,
    SHAPE_LETTERS,
    cell_name,
    cell_word,
    grid_text,
    on_grid,
    text_world_example,
    text_world_stream,
    text_world_vocabulary,
)
from nanomolmo2.shapesworld.videos import write_shapesworld_videos
from nanomolmo2.tokens import IGNORE_INDEX, IMAGE_PATCH_ID

SIZE = 56  # 4 x 4 patches of 14 px: a small grid


@functools.cache
def tokenizer() -> Tokenizer:
    return Tokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_world")
    write_shapesworld(out, 12, seed=0, image_size=SIZE)
    write_shapesworld_videos(out, 3, seed=0, image_size=SIZE, max_seconds=2)
    return out


def processor(side: int = 4) -> Processor:
    """The tiny model's layout: the global crop only, one vision token per patch, for images and video frames."""
    return Processor(tokenizer(), crop_size=14 * side, max_crops=0, image_pooling=(1, 1), video_pooling=(1, 1))


def test_every_grid_word_is_one_qwen3_token_and_words_differ():
    words = [cell_word(c, s) for c in COLOUR_LETTERS for s in SHAPE_LETTERS]
    names = [cell_name(r, c) for r in range(9) for c in range(9)]  # the largest grid the letters allow
    ids = [tokenizer().encode_text(w) for w in words + names]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == len(ids)  # no object word is a cell name
    assert set(LEVELS["hard"].colours) <= set(COLOUR_LETTERS) and set(LEVELS["hard"].shapes) <= set(SHAPE_LETTERS)
    with pytest.raises(ValueError, match="at most 9"):
        grid_text([], 140, 140, 10)


def test_grid_puts_each_object_in_the_cell_of_its_centre():
    text = grid_text([("red", "circle", 20.0, 3.0), ("blue", "star", 55.9, 55.9)], SIZE, SIZE, 4)
    ids = tokenizer().encode(text)
    assert len(ids) == 2 + 16  # markers + one token per cell
    words = [tokenizer().decode([i]) for i in ids[1:-1]]
    assert words[1] == " rc" and words[15] == " ba"  # row 0 col 1; the last cell
    assert words[0] == " AA" and words[4] == " BA" and words[14] == " DC"
    assert text.startswith(GRID_START) and text.endswith(GRID_END)


def test_on_grid_moves_points_into_their_cell_centres_and_keeps_them_in_the_objects(folder):
    inside = total = 0
    for line in (folder / "images.jsonl").read_text().splitlines():
        row = json.loads(line)
        moved = on_grid(row, 8)  # 7-px cells: objects of the easy level are 13 px across and more
        mask = np.array(Image.open(folder / row["masks"]))
        for before, after in zip(row["annotations"], moved["annotations"], strict=True):
            for (x, y), (u, v) in zip(before.get("points", []), after.get("points", []), strict=True):
                assert int(x * 8 / SIZE) == int(u * 8 / SIZE) and (u - 3.5) % 7 == 0 and (v - 3.5) % 7 == 0
                inside += mask[int(v), int(u)] == mask[int(y), int(x)]
                total += 1
            if after["task"] == "caption":  # the same objects, perhaps other places
                assert parse_caption(after["caption"]) == parse_caption(before["caption"])
    assert total > 20 and inside / total > 0.95


@pytest.mark.parametrize("kind", ["pointing", "video"])
def test_text_world_example_has_the_vision_examples_layout(folder, kind):
    """Same length, positions, annotations and labels as the vision-language example of the same row: only the
    vision tokens differ, each replaced by one word."""
    dataset = next(iter(build_mixture(folder, [[1.0, [kind]]], 0, max_frames=8).datasets))
    for index in range(3):
        text = text_world_example(dataset, index, processor(), np.random.default_rng(index), 4, 4)
        vision = tokenize_example(dataset.example(index, np.random.default_rng(index)), processor())
        assert len(text) == len(vision)
        assert text.position_ids.tolist() == vision.position_ids.tolist()
        assert text.annotation_ids.tolist() == vision.annotation_ids.tolist()
        assert text.labels.tolist() == vision.labels.tolist()
        slots = vision.mm_token_type_ids.bool()  # the vision tokens: patches and their markers
        assert text.input_ids[~slots].tolist() == vision.input_ids[~slots].tolist()
        assert int((vision.input_ids == IMAGE_PATCH_ID).sum()) == int(
            (text.input_ids[slots] != IMAGE_PATCH_ID).sum()
        ) - (
            int(slots.sum()) - int((vision.input_ids == IMAGE_PATCH_ID).sum())
        )  # one word per patch, one marker per marker


@pytest.mark.parametrize("kind", ["pointing", "video"])
def test_a_shifted_grid_is_the_same_example_after_some_newlines(folder, kind):
    """max_shift: 0..max_shift newlines between BOS and the grid (no loss on them), the rest token for token the
    unshifted example, its positions moved on by as many; different examples get different shifts."""
    dataset = next(iter(build_mixture(folder, [[1.0, [kind]]], 0, max_frames=8).datasets))
    newline = tokenizer().encode("\n")
    shifts = set()
    for index in range(min(6, len(dataset))):
        plain = text_world_example(dataset, index, processor(), np.random.default_rng(index), 4, 4)
        shifted = text_world_example(dataset, index, processor(), np.random.default_rng(index), 4, 4, max_shift=12)
        n = len(shifted) - len(plain)
        assert 0 <= n <= 12 and shifted.input_ids[1 : 1 + n].tolist() == newline * n
        keep = [0] + list(range(1 + n, len(shifted)))
        assert shifted.input_ids[keep].tolist() == plain.input_ids.tolist()
        assert shifted.labels[keep].tolist() == plain.labels.tolist()
        assert (shifted.labels[1 : 1 + n] == IGNORE_INDEX).all()
        assert shifted.position_ids[: 1 + n].tolist() == list(range(1 + n))
        assert shifted.position_ids[1 + n :].tolist() == (plain.position_ids[1:] + n).tolist()
        shifts.add(n)
    assert len(shifts) > 1


def test_every_token_mode_puts_the_loss_everywhere_but_keeps_the_layout(folder):
    dataset = next(iter(build_mixture(folder, [[1.0, ["pointing"]]], 0).datasets))
    answers = text_world_example(dataset, 0, processor(), np.random.default_rng(0), 4, 4)
    every = text_world_example(dataset, 0, processor(), np.random.default_rng(0), 4, 4, every_token=True)
    assert every.input_ids.tolist() == answers.input_ids.tolist()
    assert every.labels.tolist() == every.input_ids.tolist()
    has_loss = answers.labels != IGNORE_INDEX
    assert 0 < int(has_loss.sum()) < len(answers) - 16  # not the grid, not the questions
    assert answers.labels[has_loss].tolist() == every.labels[has_loss].tolist()


def test_centred_points_answer_about_the_scene_on_the_grid(folder):
    dataset = next(iter(build_mixture(folder, [[1.0, ["pointing"]]], 0).datasets))
    grid = lambda data: on_grid(data, 4)  # noqa: E731
    for index in range(3):
        rng = np.random.default_rng(index)
        centred = text_world_example(dataset, index, processor(), rng, 4, 4, centred_points=True)
        vision = tokenize_example(dataset.example(index, np.random.default_rng(index), rewrite=grid), processor())
        assert centred.labels.tolist() == vision.labels.tolist()
    true = text_world_example(dataset, 0, processor(), np.random.default_rng(0), 4, 4)
    centred = text_world_example(dataset, 0, processor(), np.random.default_rng(0), 4, 4, centred_points=True)
    assert centred.labels.tolist() != true.labels.tolist()  # a cell's centre is not its point


def test_vocabulary_covers_every_token_of_the_stream(folder):
    vocabulary = set(text_world_vocabulary(folder, tokenizer(), side=4))
    mixture = [[1, ["caption"]], [1, ["pointing"]], [1, ["vqa"]], [1, ["video"]], [1, ["text"]]]
    stream = text_world_stream(folder, mixture, processor(), 0, 4, 4, 8, 1024, every_token=True)
    seen = set()
    for _, example in zip(range(200), stream, strict=False):
        seen |= set(example.input_ids.tolist())
    assert seen <= vocabulary
