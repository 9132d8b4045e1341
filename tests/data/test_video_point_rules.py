"""Molmo2-VideoPoint's data rules: clip-relative times (`clip_times`) and the two query styles with 20 % multi-turn
(`video_point_styles`). Expected times and strings are worked out by hand from the rules in
olmo/data/molmo2_datasets.py and olmo/preprocessing/point_formatter.py (allenai/molmo2)."""

import json
import logging

import cv2
import numpy as np
import pytest

from nanomolmo2.data.data_root import Entry, open_dataset
from nanomolmo2.data.datasets import JsonlDataset
from nanomolmo2.data.video_io import read_frames
from nanomolmo2.data.video_point_rules import TEMPLATES

WIDTH, HEIGHT = 64, 48  # pixel (32, 24) is 500 500 on the 0-1000 scale, (16, 12) is 250 250


def write_video(path, frames=40, fps=10.0):
    """A 4 s video (10 fps): frame k at k / 10 s."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    for k in range(frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), 6 * k, dtype=np.uint8))
    writer.release()


def write_rows(folder, rows):
    folder.mkdir(exist_ok=True)
    write_video(folder / "v.mp4")
    path = folder / "videopoint.jsonl"
    path.write_text("".join(json.dumps({"video": "v.mp4", "width": WIDTH, "height": HEIGHT} | r) + "\n" for r in rows))
    return path


def test_clip_frames_and_points_are_timed_from_the_clip_start(tmp_path, caplog):
    counting = {"task": "counting", "label": "dots", "points": [[1.7, 32, 24], [2.5, 16, 12]], "count": 2}
    outside = {"task": "counting", "label": "owls", "points": [[3.6, 32, 24]], "count": 1}  # after the clip's end
    path = write_rows(tmp_path, [{"clip_start": 1.0, "clip_end": 3.0, "annotations": [counting, outside]}])

    example = JsonlDataset(path, clip_times=True)[0]
    frames, times, size = example.video.load()
    # The 2 s clip sampled at 2 fps: 0, 0.5, 1.0, 1.5 and its last frame, timed from the clip start.
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0] and size == (WIDTH, HEIGHT)
    assert np.array_equal(frames[0], read_frames(tmp_path / "v.mp4", [10])[0])  # the video's frame at 1.0 s
    with caplog.at_level(logging.WARNING):
        conversations = example.video_conversations(times, *size)
    # floor((1.7 - 1.0) / 0.5) * 0.5 = 0.5 and floor((2.5 - 1.0) / 0.5) * 0.5 = 1.5, written str(round(t, 1))
    t1, t2 = str(round(0.5, 1)), str(round(1.5, 1))
    expected = f'Counting the <points coords="{t1} 1 500 500;{t2} 2 250 250">dots</points> shows a total of 2.'
    assert [c.turns[0][1] for c in conversations] == [expected]
    assert "owls" not in caplog.text and "outside the sampled video" in caplog.text  # 3.6 - 1.0 = 2.6 > 2.0

    # Without the rule (ShapesWorld's default): times from the video start, points on the nearest sampled frame.
    example = JsonlDataset(path)[0]
    frames, times, size = example.video.load()
    assert times == [1.0, 1.5, 2.0, 2.5, 3.0]
    answer = example.video_conversations(times, *size)[0].turns[0][1]
    assert answer == 'Counting the <points coords="1.5 1 500 500;2.5 2 250 250">dots</points> shows a total of 2.'


def test_clip_times_floor_onto_the_annotation_grid_in_a_whole_video(tmp_path):
    """No clip: clip_start is 0; a time off the 2 fps grid floors onto it (1.4 s -> 1.0, where the nearest sampled
    frame would be 1.5), a time on it stays."""
    points = [[1.4, 32, 24], [3.5, 16, 12]]
    path = write_rows(tmp_path, [{"annotations": [{"task": "pointing", "label": "dots", "points": points}]}])
    example = JsonlDataset(path, clip_times=True)[0]
    times = example.video.load()[1]
    assert times[0] == 0.0 and times[-2:] == [3.5, 3.9]
    answer = example.video_conversations(times, WIDTH, HEIGHT)[0].turns[0][1]
    assert answer == '<points coords="1.0 1 500 500;3.5 2 250 250">dots</points>'


QUERIES = [
    {"task": "counting", "label": "dots", "question": "How many dots can you spot?", "count": 2,
     "points": [[0.5, 32, 24], [1.0, 16, 12]]},
    {"task": "counting", "label": "cats", "question": "Any cats?", "count": 0, "points": []},
    # the count (3) disagrees with the points: Molmo2 states the number of points written (2)
    {"task": "counting", "label": "cars", "count": 3, "points": [[1.0, 16, 12], [1.0, 32, 24]]},
]  # fmt: skip
COORDS = {"dots": "0.5 1 500 500;1.0 2 250 250", "cars": "1.0 1 250 250 2 500 500"}


def expected_turn(query: dict, style: str, template: int) -> tuple[str, str]:
    """Molmo2's prompt and answer of one query, written out from the rule."""
    label = query["label"]
    if style == "video_point_count":
        prompt = query.get("question") or TEMPLATES[style][template].format(label=label)
    else:
        prompt = TEMPLATES[style][template].format(label=label)
    if query["count"] == 0:
        return prompt, "There are none."
    points = f'<points coords="{COORDS[label]}">{label}</points>'
    n = len(query["points"])
    return prompt, (f"Counting the {points} shows a total of {n}." if style == "video_point_count" else points)


def test_each_query_draws_a_style_and_one_in_five_videos_is_one_conversation(tmp_path):
    data = JsonlDataset(write_rows(tmp_path, [{"annotations": QUERIES}]), video_point_styles=True)
    seen = set()
    for position in range(40):
        # the stream's generator for this position; its draws, in order: the annotation order (every example
        # shuffles its annotations), then per query a style and a template, then multi-turn with p = 0.2
        rng = np.random.default_rng([7, position])
        order = list(range(len(QUERIES)))
        rng.shuffle(order)
        turns, styles = [], []
        for k in order:
            style = ("video_point_count", "video_point")[int(rng.integers(2))]
            turns.append(expected_turn(QUERIES[k], style, int(rng.integers(len(TEMPLATES[style])))))
            styles.append({"video_point_count": "video_counting", "video_point": "video_pointing"}[style])
        multi_turn = rng.random() < 0.2

        example = data.example(0, np.random.default_rng([7, position]))
        conversations = example.video_conversations([0.0, 0.5, 1.0, 1.5], WIDTH, HEIGHT)
        if multi_turn:
            assert [(c.turns, c.style) for c in conversations] == [(turns, styles[0])]
        else:
            assert [(c.turns, c.style) for c in conversations] == [([t], s) for t, s in zip(turns, styles, strict=True)]
        seen |= {(multi_turn, style) for style in styles}
    assert seen == {(m, s) for m in (False, True) for s in ("video_counting", "video_pointing")}


def test_one_query_is_one_conversation_and_stable_without_a_generator(tmp_path):
    data = JsonlDataset(write_rows(tmp_path, [{"annotations": QUERIES[:1]}]), video_point_styles=True)
    for position in range(10):
        rng = np.random.default_rng([3, position])
        rng.shuffle([0])
        style = ("video_point_count", "video_point")[int(rng.integers(2))]
        expected = expected_turn(QUERIES[0], style, int(rng.integers(len(TEMPLATES[style]))))
        conversations = data.example(0, np.random.default_rng([3, position])).video_conversations(
            [0.0, 0.5, 1.0], 64, 48
        )
        assert [c.turns for c in conversations] == [[expected]]  # no draw for multi-turn with a single query
    first = data[0].video_conversations([0.0, 0.5, 1.0], 64, 48)
    assert data[0].video_conversations([0.0, 0.5, 1.0], 64, 48) == first


@pytest.mark.parametrize("value", [1, "yes", None])
def test_mixture_entries_switch_the_rules_on(tmp_path, value):
    write_rows(tmp_path, [{"clip_start": 1.0, "clip_end": 3.0, "annotations": QUERIES}])
    entry = Entry.parse({"name": "videopoint", "clip_times": True, "video_point_styles": True})
    data = open_dataset(tmp_path, entry)
    assert data.clip_times and data.video_point_styles
    assert data[0].video.load()[1][0] == 0.0
    with pytest.raises(ValueError, match="clip_times must be true or false"):
        Entry.parse({"name": "videopoint", "clip_times": value})
