"""Molmo2's per-dataset data rules (olmo/data/pixmo_datasets.py in allenai/molmo2), each checked on values worked
out by hand from the rule: which examples an image yields, how its points split, the conversations each holds."""

import json

import numpy as np
import PIL.Image
import pytest

from nanomolmo2.data.data_root import Entry, open_dataset
from nanomolmo2.data.datasets import HIGH_RES_MAX_CROPS, JsonlDataset

COUNT_PROMPT = "How many {} are there?"
POINT_PROMPT = "Point to {}\nPlease say 'There are none.' if it is not in the image."


def write(folder, rows):
    folder.mkdir(exist_ok=True)
    PIL.Image.new("RGB", (200, 100)).save(folder / "a.png")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "data.jsonl"


def points_row(counts):
    """One 200x100 image whose annotation k has counts[k] points, all at (20, 10): "1 100 100" on the 0-1000 scale."""
    annotations = [{"task": "pointing", "label": f"l{k}", "points": [[20, 10]] * n} for k, n in enumerate(counts)]
    return {"image": "a.png", "width": 200, "height": 100, "annotations": annotations}


def test_pixmo_points_cut_into_examples_of_at_most_60_points_each_in_both_styles(tmp_path):
    # [10, 70, 30, 25, 5]: 70 > 60 is dropped; 10 + 30 = 40, + 25 would be 65 -> [0, 2] and [3, 4]; 2 styles each
    data = JsonlDataset(write(tmp_path, [points_row([10, 70, 30, 25, 5])]), max_points=60, both_point_styles=True)
    assert len(data) == 4
    chunks = [[c.turns[0] for c in data[i].conversations] for i in range(4)]
    coords = " ".join(f"{i} 100 100" for i in range(1, 11))
    assert chunks[0][0] == (
        COUNT_PROMPT.format("l0"),
        f'Counting the <points coords="1 {coords}">l0</points> shows a total of 10.',
    )
    assert chunks[1][0] == (POINT_PROMPT.format("l0"), f'<points coords="1 {coords}">l0</points>')
    assert [t[0] for t in chunks[0]] == [COUNT_PROMPT.format("l0"), COUNT_PROMPT.format("l2")]
    assert [t[0] for t in chunks[1]] == [POINT_PROMPT.format("l0"), POINT_PROMPT.format("l2")]
    assert [t[0] for t in chunks[2]] == [COUNT_PROMPT.format("l3"), COUNT_PROMPT.format("l4")]
    assert [t[0] for t in chunks[3]] == [POINT_PROMPT.format("l3"), POINT_PROMPT.format("l4")]
    assert [data[i].conversations[0].style for i in range(4)] == ["point_count", "pointing"] * 2


@pytest.mark.parametrize(
    "counts, chunks",
    [
        ([50, 40, 30, 10], [["l0"], ["l1"], ["l2", "l3"]]),  # 130 points: 50 | 40 (90 > 60) | 30 + 10
        ([60, 61, 0, 1], [["l0", "l2"], ["l3"]]),  # 60 is kept, 61 dropped; 60 + 0 still fits, + 1 does not
    ],
)
def test_how_points_split(tmp_path, counts, chunks):
    data = JsonlDataset(write(tmp_path, [points_row(counts)]), max_points=60)
    assert len(data) == len(chunks)
    got = [
        [c.turns[0][0].split("\n")[0].removeprefix("Point to ") for c in data[i].conversations]
        for i in range(len(data))
    ]
    assert got == chunks


def test_pixmo_count_twice_per_image_from_a_mixture_entry(tmp_path):
    counting = {"task": "counting", "label": "dots", "points": [[20, 10], [100, 50]], "count": 2}
    row = {"image": "a.png", "width": 200, "height": 100, "annotations": [counting]}
    write(tmp_path, [row])
    data = open_dataset(tmp_path, Entry.parse({"name": "data", "both_point_styles": True}))
    assert len(data) == 2
    points = '<points coords="1 1 100 100 2 500 500">dots</points>'
    assert data[0].conversations[0].turns == [
        (COUNT_PROMPT.format("dots"), f"Counting the {points} shows a total of 2.")
    ]
    assert data[1].conversations[0].turns == [(POINT_PROMPT.format("dots"), points)]
    with pytest.raises(ValueError, match="max_points must be a whole number"):
        Entry.parse({"name": "data", "max_points": 0})


def test_all_annotations_in_a_new_order_at_each_draw(tmp_path):
    annotations = [{"task": "vqa", "question": f"q{k}", "answer": f"a{k}"} for k in range(12)]
    data = JsonlDataset(write(tmp_path, [{"image": "a.png", "annotations": annotations}]))
    assert [c.turns[0][0] for c in data[0].conversations] == [f"q{k}" for k in range(12)]  # all 12, file order
    firsts = set()
    for seed in range(40):
        order = list(range(12))
        np.random.default_rng(seed).shuffle(order)  # Molmo2: rng.shuffle(messages), a new rng per draw
        example = data.example(0, np.random.default_rng(seed))
        assert [c.turns[0][0] for c in example.conversations] == [f"q{k}" for k in order]
        firsts.add(order[0])
    assert len(firsts) > 6  # over draws, different annotations come first (and survive a tight token budget)
    capped = JsonlDataset(tmp_path / "data.jsonl", max_conversations=5)  # the demo's stable subset
    assert len(capped.example(0, np.random.default_rng(0)).conversations) == 5


def test_a_caption_with_one_random_transcript(tmp_path):
    caption = {"task": "caption", "caption": "A cat.", "transcripts": ["um a cat", "so a cat", "a cat I think"]}
    path = write(tmp_path, [{"image": "a.png", "annotations": [caption]}])
    assert [c.style for c in JsonlDataset(path).example(0, np.random.default_rng(0)).conversations] == ["caption"]
    data = JsonlDataset(path, transcripts=True)
    seen = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        pick = caption["transcripts"][int(rng.integers(3))]  # PixMoCap.get: transcripts[rng.randint(len)]
        order = [("caption", "A cat."), ("transcript", pick)]
        rng.shuffle(order)  # then the two annotations are shuffled like any others
        example = data.example(0, np.random.default_rng(seed))
        assert [(c.style, c.turns[0][1]) for c in example.conversations] == order
        seen.add(pick)
    assert seen == set(caption["transcripts"])


def test_high_res_crops_with_probability_p_on_single_images(tmp_path):
    row = {"image": "a.png", "width": 200, "height": 100,
           "annotations": [{"task": "pointing", "label": "x", "points": [[20, 10]]}]}  # fmt: skip
    data = JsonlDataset(write(tmp_path, [row]), p_high_res=0.3)
    high = 0
    for seed in range(50):
        rng = np.random.default_rng(seed)
        rng.shuffle([0])  # the annotation order is drawn first
        expected = HIGH_RES_MAX_CROPS if rng.random() < 0.3 else None
        assert data.example(0, np.random.default_rng(seed)).max_crops == expected
        high += expected is not None
    assert 0 < high < 50
    assert data[0].max_crops is None  # no generator (evaluation, inspection): the processor's own crops
