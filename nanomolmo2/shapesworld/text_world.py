"""ShapesWorld as text: every image and video frame written as a grid of cell words, with the same conversations.

The tiny language model reads ShapesWorld in text before it ever sees a picture, the way Qwen3 had read about the
world before Molmo2 showed it images. A scene is written where the image's vision tokens go, one word per
patch-sized cell, so the text has the image's layout token for token:

    image tokens   BOS <low_res_im_start> <im_patch> x 64          <im_end>      <|im_start|>user ...
    text world     BOS <|vision_start|>  " AA" " rc" " AC" ... x 64 <|vision_end|> <|im_start|>user ...

A cell holds the word of the object whose centre lies in it (" rc": red circle; colour letter, then shape letter),
or, when none does, the cell's own name, row letter then column letter (" AA" top left ... " HH" bottom right), as
on a chessboard: text has no other way to say where a word is (two centres never share a cell: objects keep apart
by more than a cell's diagonal). An image patch says where it is through its features; a word says it by name. A video
is its frames, each after its time, as the processor lays them out ("0.0 <grid> 0.5 <grid> ..."). Questions and
answers are the ones the vision-language model trains on, built by the same dataset code (data/datasets.py).
Positions, annotation ids and labels follow examples.py, so a text-world example is a vision-language example with
the vision tokens replaced by words: what the language model learns here, stage 1 teaches the connector to feed it.

A grid says which cell an object is in, not where in the cell. The answers keep the data's own points (the language
model learns a point's place within its cell as a guess; the vision tokens will say it), or, with `centred_points`,
the scene is put on the grid (`on_grid`: every point at its cell's centre, 99.8 % of them still inside the object,
captions written again from the moved objects) so that every answer follows from the text. The true points made the
better start for stage 1 (docs/LOG.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..data.chat import answer_turn, user_turn
from ..data.data_root import build_mixture
from ..data.datasets import CAPTION_PROMPTS, TRACK_PROMPT, VIDEO_CAPTION_PROMPTS, JsonlDataset
from ..data.examples import Example, TokenizedExample, tokenize_example
from ..data.jsonl import jsonl_files, read_jsonl
from ..data.points import COUNT_PROMPT, POINT_PROMPT, VIDEO_POINT_PROMPT
from ..data.processor import Processor
from ..data.tokenizer import Tokenizer
from ..data.video_io import sample_frame_times
from ..data.vocabulary import answer_vocabulary
from ..tokens import BOS_TOKEN, IGNORE_INDEX
from .motion import colour_at, track
from .tasks import NUMBERS, PLACES, PLURALS, caption, position_word

COLOUR_LETTERS = {"red": "r", "green": "g", "blue": "b", "yellow": "y", "purple": "p", "orange": "o", "cyan": "n"}
# one Qwen3 token for every colour letter + shape letter (checked in tests/shapesworld/test_text_world.py)
SHAPE_LETTERS = {"circle": "c", "square": "s", "triangle": "t", "star": "a", "diamond": "i", "hexagon": "e",
                 "cross": "p"}  # fmt: skip
ROW_LETTERS = COLUMN_LETTERS = "ABCDEFGHI"  # every pair of them is one Qwen3 token: grids of up to 9 x 9 cells
GRID_START, GRID_END = "<|vision_start|>", "<|vision_end|>"  # Qwen3's own markers for "an image goes here"


def cell_word(colour: str, shape: str) -> str:
    """The word of a cell holding an object's centre: " " + colour letter + shape letter (one Qwen3 token)."""
    return f" {COLOUR_LETTERS[colour]}{SHAPE_LETTERS[shape]}"


def cell_name(row: int, col: int) -> str:
    """The word of an empty cell: its row letter then its column letter (" AA" top left)."""
    return f" {ROW_LETTERS[row]}{COLUMN_LETTERS[col]}"


def grid_text(objects: list[tuple[str, str, float, float]], width: int, height: int, side: int) -> str:
    """A side x side grid, rows top to bottom, of (colour, shape, x, y) objects in a width x height picture."""
    if side > len(ROW_LETTERS):
        raise ValueError(f"a text-world grid has at most {len(ROW_LETTERS)} cells a side, not {side}")
    cells = [cell_name(r, c) for r in range(side) for c in range(side)]
    for colour, shape, x, y in objects:
        row, col = min(int(y * side / height), side - 1), min(int(x * side / width), side - 1)
        cells[row * side + col] = cell_word(colour, shape)
    return GRID_START + "".join(cells) + GRID_END


def cell_centre(x: float, y: float, width: int, height: int, side: int) -> tuple[float, float]:
    """The centre (pixels) of the cell a point lies in."""
    col, row = min(int(x * side / width), side - 1), min(int(y * side / height), side - 1)
    return (col + 0.5) * width / side, (row + 0.5) * height / side


def on_grid(data: dict, side: int) -> dict:
    """A ShapesWorld row with its scene put on the grid: every object centre and every point moved to the centre of
    its cell, and an image's caption written again from the moved objects (its places may change)."""
    width, height = data["width"], data["height"]

    def moved(point: list) -> list:  # [x, y] or [t, x, y]
        return [*point[:-2], *cell_centre(*point[-2:], width, height, side)]

    annotations = []
    for a in data["annotations"]:
        a = dict(a)
        if "points" in a:
            a["points"] = [moved(p) for p in a["points"]]
        if "tracks" in a:
            a["tracks"] = {k: [moved(p) for p in track] for k, track in a["tracks"].items()}
        annotations.append(a)
    data = {**data, "annotations": annotations}
    if "image" in data:
        objects = []
        for o in data["objects"]:
            x, y = cell_centre(*o["center"], width, height, side)
            objects.append({**o, "center": [x, y], "position": position_word(x, y, width, height)})
        data["objects"] = objects
        data["annotations"] = [{**a, "caption": caption(objects)} if a["task"] == "caption" else a for a in annotations]
    return data


def image_text(row: dict, side: int) -> str:
    """An image row's grid (its objects' centres)."""
    objects = [(o["colour"], o["shape"], *o["center"]) for o in row["objects"]]
    return grid_text(objects, row["width"], row["height"], side)


def frame_times(row: dict, max_fps: float, max_frames: int) -> list[float]:
    """The times of the frames a video reader samples (data/video_io.py: the same frames, the same times)."""
    fps, last = row["fps"], row["num_frames"] - 1
    return [i / fps for i in sorted({min(round(t * fps), last) for t in sample_frame_times(last / fps, max_fps,
                                                                                          max_frames)})]  # fmt: skip


def video_text(row: dict, times: list[float], side: int) -> str:
    """A video row's frames, each after its time as the processor writes it ("0.0 <grid> 0.5 <grid> ...")."""
    frames = []
    for t in times:
        seen = []
        for o in row["objects"]:
            centers, visible = track(o, [t])
            if visible[0]:
                seen.append((colour_at(o, t), o["shape"], *centers[0]))
        frames.append(f"{t:.1f} " + grid_text(seen, row["width"], row["height"], side))
    return " ".join(frames)


def with_text_prefix(example: TokenizedExample, prefix: list[int], every_token: bool = False) -> TokenizedExample:
    """Put `prefix` (the grid's token ids) right after the BOS of a media-free example: positions shift past it and
    it belongs to the shared prefix (annotation 0). every_token: the loss on every token (the grid, the questions
    and the answers: next-token prediction on the whole text), else on the answers only."""
    n = len(prefix)
    input_ids = torch.cat([example.input_ids[:1], torch.tensor(prefix, dtype=torch.long), example.input_ids[1:]])
    if every_token:
        labels, weights = input_ids.clone(), torch.ones(len(input_ids))
    else:
        labels = torch.cat([example.labels[:1], torch.full((n,), IGNORE_INDEX), example.labels[1:]])
        weights = torch.cat([example.loss_weights[:1], torch.zeros(n), example.loss_weights[1:]])
    return replace(
        example,
        input_ids=input_ids,
        labels=labels,
        loss_weights=weights,
        position_ids=torch.cat([example.position_ids[:1], torch.arange(1, n + 1), example.position_ids[1:] + n]),
        annotation_ids=torch.cat(
            [example.annotation_ids[:1], torch.zeros(n, dtype=torch.long), example.annotation_ids[1:]]
        ),  # fmt: skip
        mm_token_type_ids=torch.zeros(len(example) + n, dtype=torch.long),
    )


def text_world_example(
    dataset: JsonlDataset,
    index: int,
    processor: Processor,
    rng: np.random.Generator,
    image_side: int,
    frame_side: int,
    max_len: int | None = None,
    every_token: bool = False,
    centred_points: bool = False,
    max_shift: int = 0,
) -> TokenizedExample:
    """Item `index` of a ShapesWorld dataset (its conversations as the vision-language model gets them), with the
    image or the video written as text. image_side / frame_side: cells per side (the vision tokens per side).
    centred_points: the scene put on the grid (`on_grid`), else the row's own points and captions.
    max_shift: up to this many newlines (a random number) between BOS and the grid, so that a cell's place cannot
    be read from its distance to the start of the text, only from the grid itself, as it must be in a video's
    later frames (docs/LOG.md)."""

    def rewrite(data: dict) -> dict:
        if "video" in data:
            return on_grid(data, frame_side)
        return on_grid(data, image_side) if "image" in data else data

    example = dataset.example(index, rng, rewrite=rewrite if centred_points else None)
    row = dataset.index.row(index // len(dataset.styles)).data
    conversations = list(example.conversations)
    if example.video is not None:
        times = frame_times(row, dataset.max_fps, dataset.max_frames)
        if example.video_conversations is not None:
            conversations += example.video_conversations(times, row["width"], row["height"])
        prefix = video_text(row, times, frame_side)
    elif example.images:
        prefix = image_text(row, image_side)
    else:
        prefix = ""
    prefix_ids = processor.tokenizer.encode(prefix)
    if prefix and max_shift:
        prefix_ids = processor.tokenizer.encode("\n") * int(rng.integers(0, max_shift + 1)) + prefix_ids
    budget = None if max_len is None else max_len - len(prefix_ids)
    text_only = Example(conversations=conversations, source=example.source)
    return with_text_prefix(tokenize_example(text_only, processor, max_len=budget), prefix_ids, every_token)


def text_world_stream(
    folder: str | Path,
    mixture: list,
    processor: Processor,
    seed: int,
    image_side: int,
    frame_side: int,
    max_frames: int = 16,
    max_len: int | None = None,
    every_token: bool = False,
    centred_points: bool = False,
    max_shift: int = 0,
) -> Iterator[TokenizedExample]:
    """Endless text-world examples drawn from a ShapesWorld folder by a training mixture (data_root.py), every
    annotation of a row in a fresh random order at each draw."""
    datasets = build_mixture(folder, mixture, seed, max_frames=max_frames)
    for position, dataset, index in datasets.stream():
        rng = np.random.default_rng([seed, position])
        yield text_world_example(
            datasets.datasets[dataset], index, processor, rng, image_side, frame_side, max_len, every_token,
            centred_points, max_shift,
        )  # fmt: skip


def text_world_vocabulary(folder: str | Path, tokenizer: Tokenizer, side: int = 8) -> list[int]:
    """Sorted ids of every token the text world of a ShapesWorld folder holds: its answers (data/vocabulary.py), its
    questions and prompts, the chat markup, the grid's words and the frames' times (for a head over the whole text)."""
    ids = set(answer_vocabulary(folder, tokenizer))
    words = [cell_word(c, s) for c in COLOUR_LETTERS for s in SHAPE_LETTERS]
    words += [cell_name(r, c) for r in range(side) for c in range(side)]
    grid = GRID_START + "".join(words) + GRID_END  # every word a grid can hold
    ids.update(tokenizer.encode(BOS_TOKEN + "\n" + " ".join(f"{t / 2:.1f} {grid}" for t in range(200))))
    ids.update(user_turn(tokenizer, "", first=True) + user_turn(tokenizer, "", first=False))
    ids.update(answer_turn(tokenizer, ""))
    questions = list(CAPTION_PROMPTS + VIDEO_CAPTION_PROMPTS)
    # captions written again on the grid may group objects the data's captions keep apart ("two red circles")
    questions += [f"and {n} {c} {p} at the {place}" for n in NUMBERS for c in COLOUR_LETTERS for p in PLURALS.values()
                  for place in PLACES]  # fmt: skip
    for file in jsonl_files(folder):
        for row in read_jsonl(file)[0]:
            for a in row.data["annotations"]:
                if "question" in a:
                    letters = "ABCDEFGHIJ"
                    options = "".join(f"\n{letters[i]}. {o}" for i, o in enumerate(a.get("options", [])))
                    questions.append(a["question"] + options)
                if "label" in a:
                    prompts = (POINT_PROMPT, COUNT_PROMPT, VIDEO_POINT_PROMPT, TRACK_PROMPT)
                    questions += [p.format(label=a["label"]) for p in prompts]
                questions += [m["content"] for m in a.get("messages", []) if m.get("role") == "user"]
    for encoded in tokenizer.encode_text_batch(sorted(set(questions))):
        ids.update(encoded)
    return sorted(ids)
