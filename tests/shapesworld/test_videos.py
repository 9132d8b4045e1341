"""ShapesWorld videos: the mp4 and its masks, determinism, captions, every annotation checked against the objects
(and, where it can be, against the masks), the CLI."""

import functools
import json
import random
import re
import string

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nanomolmo2.cli import main
from nanomolmo2.data.datasets import VideoDataset
from nanomolmo2.data.points import parse_points
from nanomolmo2.data.video_io import count_frames, load_video, read_frames
from nanomolmo2.shapesworld.motion import MOTIONS, colour_at, track
from nanomolmo2.shapesworld.scene import COLOURS, draw_object
from nanomolmo2.shapesworld.tasks import SINGULAR
from nanomolmo2.shapesworld.video_tasks import parse_video_caption, timestamps, video_caption
from nanomolmo2.shapesworld.videos import make_video, video_row, write_shapesworld_videos


def read_video(path) -> np.ndarray:
    """Every frame of a video file, uint8 RGB [T, H, W, 3]."""
    return read_frames(path, list(range(count_frames(path))))


@functools.cache
def written(level: str, tmp_root: str) -> list[tuple[dict, np.ndarray, np.ndarray, np.ndarray]]:
    """(row, decoded RGB frames, masks, times) of videos 0..9 of seed 0, written once per level."""
    out = f"{tmp_root}/{level}"
    write_shapesworld_videos(out, 10, seed=0, level=level)
    result = []
    for line in open(f"{out}/videos.jsonl"):
        row = json.loads(line)
        with np.load(f"{out}/{row['masks']}") as npz:
            result.append((row, read_video(f"{out}/{row['video']}"), npz["masks"], npz["times"]))
    return result


@pytest.fixture(params=["easy", "hard"])
def videos(request, tmp_path_factory):
    return written(request.param, str(tmp_path_factory.getbasetemp()))


@functools.cache
def rows(level: str, n: int = 60) -> list[dict]:
    """Rows of videos 0..n-1 of seed 7 (no files), small, for the annotation tests."""
    return [video_row(7, i, level, make_video(7, i, level, 64, 10, (2, 4))) for i in range(n)]


def annotations(row: dict, task: str) -> list[dict]:
    return [a for a in row["annotations"] if a["task"] == task]


def frame_of(t: float, row: dict) -> int:
    return min(round(t * row["fps"]), row["num_frames"] - 1)


def mask_id(masks: np.ndarray, t: float, row: dict, x: float, y: float) -> int:
    """The mask label under a point, which must not depend on rounding or flooring the pixel coordinates."""
    k = frame_of(t, row)
    rounded, floored = masks[k, round(y), round(x)], masks[k, int(y), int(x)]
    assert rounded == floored, (t, x, y)
    return int(rounded)


def files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_mp4_decodes_to_the_frames_with_the_right_colours(videos):
    for row, frames, masks, times in videos:
        assert frames.shape == (row["num_frames"], row["height"], row["width"], 3) == (*masks.shape, 3)
        assert row["duration"] == row["num_frames"] / row["fps"] and 2 < row["duration"] <= 4.1
        last = (row["num_frames"] - 1) / row["fps"]
        assert last * 2 == int(last * 2)  # the last frame is on the 2-fps grid
        assert np.array_equal(times, np.arange(row["num_frames"]) / row["fps"])
        for o in row["objects"]:
            centers, seen = track(o, times)
            visible = np.flatnonzero(seen)
            checked = [visible[0], visible[len(visible) // 2], visible[-1]]
            if o["colour_change"]:  # the first frame in the new colour, and the one before
                k = int(np.searchsorted(times, o["colour_change"]["time"] - 1e-9))
                checked += [k - 1, k]
            for k in checked:
                x, y = np.round(centers[k]).astype(int)
                got = frames[k, y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)  # mp4 is lossy: a 3x3 mean
                want = colour_at(o, times[k])
                assert np.abs(got - COLOURS[want]).max() < 40, (row["id"], o["id"], k, got, want)
                assert min(COLOURS, key=lambda c: np.abs(np.subtract(COLOURS[c], got)).sum()) == want


def test_masks_match_the_objects(videos):
    for row, _, masks, times in videos:
        size = row["width"]
        assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, *(o["id"] for o in row["objects"])}
        paths = {o["id"]: track(o, times) for o in row["objects"]}
        for o in row["objects"]:
            centers, seen = paths[o["id"]]
            # inside the frame, and the shape drawn alone has exactly its mask pixels: nothing covers it in any frame
            assert np.all(centers - o["size"] >= 0) and np.all(centers + o["size"] <= size)
            for k in range(len(times)):
                alone = Image.new("L", (size, size), 0)
                draw_object(ImageDraw.Draw(alone), {**o, "center": centers[k].tolist()}, 1)
                expected = np.asarray(alone).astype(bool) if seen[k] else np.zeros((size, size), bool)
                assert np.array_equal(masks[k] == o["id"], expected), (row["id"], o["id"], k)
            # the 2-fps centers lie in their own mask
            for t in timestamps(row["duration"]):
                c, s = track(o, [frame_of(t, row) / row["fps"]])
                if s[0]:
                    assert mask_id(masks, t, row, *c[0]) == o["id"]
        for a in row["objects"]:  # bounding circles keep apart in every frame where both are visible
            for b in row["objects"]:
                if a["id"] < b["id"]:
                    (ca, sa), (cb, sb) = paths[a["id"]], paths[b["id"]]
                    dist = np.hypot(*(ca - cb).T)[sa & sb]
                    assert np.all(dist >= a["size"] + b["size"] + 2)


def test_same_seed_same_files_and_other_seed_other_rows(tmp_path):
    write_shapesworld_videos(tmp_path / "a", 3, seed=1, level="hard", image_size=64, workers=1)
    write_shapesworld_videos(tmp_path / "b", 3, seed=1, level="hard", image_size=64, workers=3)
    write_shapesworld_videos(tmp_path / "c", 3, seed=2, level="hard", image_size=64)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 3 + 3 + 2  # videos, masks, videos.jsonl, videos_info.json
    assert a["videos.jsonl"] == b["videos.jsonl"] and a["videos_info.json"] == b["videos_info.json"]
    assert all(a[f"masks/{i:06d}.npz"] == b[f"masks/{i:06d}.npz"] for i in range(3))
    for i in range(3):  # mp4 bytes may depend on the codec build, the decoded frames may not
        assert np.array_equal(
            read_video(tmp_path / "a" / f"videos/{i:06d}.mp4"), read_video(tmp_path / "b" / f"videos/{i:06d}.mp4")
        )
    assert a["videos.jsonl"] != c["videos.jsonl"]
    assert json.loads(a["videos.jsonl"].splitlines()[0])["id"] == "shapes-video-1-0"


def test_video_does_not_depend_on_the_number_of_videos(tmp_path):
    write_shapesworld_videos(tmp_path / "few", 2, seed=5, image_size=64)
    info = write_shapesworld_videos(tmp_path / "many", 4, seed=5, image_size=64)
    few, many = files(tmp_path / "few"), files(tmp_path / "many")
    assert many["videos.jsonl"].startswith(few["videos.jsonl"]) and info["videos"] == 4
    for i in range(2):
        assert few[f"masks/{i:06d}.npz"] == many[f"masks/{i:06d}.npz"]
        video = f"videos/{i:06d}.mp4"
        assert np.array_equal(read_video(tmp_path / "few" / video), read_video(tmp_path / "many" / video))


SENTENCE = re.compile(
    r"An? (\w+) (\w+)( appears at [\d.]+ seconds?(,| and))?"
    r" (moves from (left to right|right to left|top to bottom|bottom to top)|stays still)"
    r"((,| and) turns (\w+) at [\d.]+ seconds?)?( and disappears at [\d.]+ seconds?)?"
)


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_captions_follow_the_grammar_and_parse_back(level):
    directions, changes, late, early = set(), 0, 0, 0
    for row in rows(level):
        objects, (cap,) = row["objects"], annotations(row, "caption")
        sentences = re.split(r"(?<=\.) ", cap["caption"])
        assert len(sentences) == len(objects)
        for sentence, o in zip(sentences, sorted(objects, key=lambda o: (o["appear"], o["id"])), strict=True):
            m = SENTENCE.fullmatch(sentence.rstrip("."))
            assert m and m.group(1, 2) == (o["colour"], o["shape"]), sentence
            assert (m.group(6) or "still") == o["direction"]
            assert m.group(9) == (o["colour_change"] and o["colour_change"]["colour"])
        assert parse_video_caption(cap["caption"]) == {(o["colour"], o["shape"], o["direction"]) for o in objects}
        directions.update(o["direction"] for o in objects)
        changes += sum(bool(o["colour_change"]) for o in objects)
        late += sum(o["appear"] > 0 for o in objects)
        early += sum(o["disappear"] < row["duration"] for o in objects)
    assert directions == set(MOTIONS) and min(changes, late, early) >= 3  # every kind of event happens
    assert {len(r["objects"]) for r in rows(level)} == set(range(1, {"easy": 3, "hard": 4}[level] + 1))


def test_caption_example_and_parse_is_robust():
    o = {"id": 1, "colour": "red", "shape": "circle", "appear": 0.0, "disappear": 4.0, "direction": "left to right"}
    o["colour_change"] = None
    p = {**o, "id": 2, "colour": "orange", "shape": "star", "appear": 1.0, "disappear": 3.5, "direction": "still"}
    p["colour_change"] = {"time": 2.5, "colour": "blue"}
    text = video_caption([p, o], 4.0)
    assert text == (
        "A red circle moves from left to right. "
        "An orange star appears at 1 second, stays still, turns blue at 2.5 seconds and disappears at 3.5 seconds."
    )
    assert parse_video_caption(text) == {("red", "circle", "left to right"), ("orange", "star", "still")}
    assert parse_video_caption("Two blue squares move from top to bottom.") == {("blue", "square", "top to bottom")}
    rng = random.Random(0)
    garbage = [None, 3, "", ".", "...2.5.", "from left to right", "circle", "ü ☃ \x00", "A a a circle."]
    garbage += ["".join(rng.choices(string.printable, k=rng.randint(0, 80))) for _ in range(200)]
    for text in garbage:
        assert isinstance(parse_video_caption(text), set)
    assert parse_video_caption("the circle moves from left to right") == set()


def the(objects: list[dict], shape: str) -> dict:
    (o,) = [o for o in objects if o["shape"] == shape]  # named by its shape only when it is the only one
    return o


def visible(o: dict, t: float) -> bool:
    return bool(track(o, [t])[1][0])


def place_of(x: float, y: float, size: int) -> str | None:
    """This test's own 3 x 3 place words; None within 4% of the frame of a line between places."""
    if min(abs(v - k * size / 3) for v in (x, y) for k in (1, 2)) < 0.04 * size:
        return None
    words = [["top left", "top", "top right"], ["left", "center", "right"], ["bottom left", "bottom", "bottom right"]]
    return words[min(int(3 * y / size), 2)][min(int(3 * x / size), 2)]


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_vqa_answers_match_the_objects(level):
    asked = set()
    for row in rows(level):
        objects, size = row["objects"], row["width"]
        last = (row["num_frames"] - 1) / row["fps"]
        assert sum(o["direction"] != "still" for o in objects) <= 1  # at most one object moves
        for a in annotations(row, "vqa"):
            q, t = a["question"], None
            if m := re.fullmatch(r"What colour is the (\w+) at (\d\.\d) seconds\?", q):
                o, t = the(objects, m.group(1)), float(m.group(2))
                assert visible(o, t)
                want = colour_at(o, t).capitalize() + "."
            elif m := re.fullmatch(r"Where is the (\w+) at (?:(\d\.\d) seconds|the end)\?", q):
                o, t = the(objects, m.group(1)), float(m.group(2) or last)
                assert visible(o, t) and (m.group(2) is None or t < last)
                want = place_of(*track(o, [t])[0][0], size).capitalize() + "."
            elif m := re.fullmatch(r"How many shapes are there at (\d\.\d) seconds\?", q):
                t = float(m.group(1))
                want = f"{sum(visible(o, t) for o in objects)}."
            elif q == "Which shape appears last?":
                o = max(objects, key=lambda o: o["appear"])
                assert all(x is o or x["appear"] + 1 <= o["appear"] for x in objects)
                want = o["shape"].capitalize() + "."
            elif m := re.fullmatch(r"When does the (\w+) turn (\w+)\?", q):
                o = the(objects, m.group(1))
                t = float(re.fullmatch(r"At (\d\.\d) seconds\.", a["answer"]).group(1))
                assert colour_at(o, t) == m.group(2) != colour_at(o, t - 0.5) and visible(o, t - 0.5)
                want = a["answer"]
            else:
                m = re.fullmatch(r"Which way does the (\w+) move\?", q)
                o = the(objects, m.group(1))
                assert o["direction"] != "still"
                want = o["direction"].capitalize() + "."
            assert t is None or (t * 2 == int(t * 2) and 0 <= t <= last)  # a frame a 2-fps reader samples
            assert a["answer"] == want, (row["id"], q)
            asked.add(" ".join(q.split()[:2]))
        assert len({a["question"] for a in annotations(row, "vqa")}) == len(annotations(row, "vqa"))
    assert asked == {"What colour", "Where is", "How many", "Which shape", "When does", "Which way"}


def test_pointing_counting_and_tracking_against_the_masks(videos):
    for row, _, masks, _ in videos:
        objects = {o["id"]: o for o in row["objects"]}
        grid = timestamps(row["duration"])
        pointing, counting = annotations(row, "pointing"), annotations(row, "counting")
        assert [a["label"] for a in pointing] == [a["label"] for a in counting] and pointing[-1]["points"] == []
        for p, c in zip(pointing, counting, strict=True):
            *colour, shape = p["label"].split()
            colour, shape = (colour[0] if colour else None), (None if shape == "shapes" else SINGULAR[shape])
            assert c["points"] == p["points"] and c["style"] == "point_count"
            ids = [mask_id(masks, t, row, x, y) for t, x, y in p["points"]]
            assert all(t in grid and t < row["duration"] and t * 2 == int(t * 2) for t, _, _ in p["points"])
            first = {}  # every object that ever matches, once, at the first 2-fps time it matches
            for t in grid:
                k = frame_of(t, row)
                for i, o in objects.items():
                    if (masks[k] == i).any() and shape in (None, o["shape"]):
                        if colour in (None, colour_at(o, k / row["fps"])):
                            first.setdefault(i, t)
            assert sorted(zip(ids, (t for t, _, _ in p["points"]), strict=True)) == sorted(first.items())
            ever = [o for o in objects.values() if shape in (None, o["shape"])]
            ever = [o for o in ever if colour in (None, o["colour"], (o["colour_change"] or {}).get("colour"))]
            assert c["count"] == len(set(ids)) == len(ever)
        for a in annotations(row, "tracking"):
            assert a["tracks"]
            for key, points in a["tracks"].items():
                o = objects[int(key)]
                assert a["label"].split()[0] == o["colour"] and SINGULAR[a["label"].split()[1]] == o["shape"]
                assert {mask_id(masks, t, row, x, y) for t, x, y in points} == {o["id"]}  # one id per object
                seen = [t for t in grid if (masks[frame_of(t, row)] == o["id"]).any()]
                assert [t for t, _, _ in points] == seen


@pytest.mark.parametrize("level", ["easy", "hard"])
def test_every_trained_point_lies_in_its_object_in_the_frame_the_reader_picks(level, tmp_path):
    """Through the training pipeline: the video's frames as the reader samples them (the demo's 16 frames), the
    answers written for them, read back; each point lies inside its object's mask in the frame shown at its time."""
    write_shapesworld_videos(tmp_path, 12, seed=3, level=level)
    dataset = VideoDataset(tmp_path, tasks=("pointing", "counting", "tracking"), max_conversations=100, max_frames=16)
    checked = 0
    for i in range(len(dataset)):
        example, row = dataset[i], dataset.index.row(i).data
        masks = np.load(tmp_path / row["masks"])["masks"]
        objects = {o["id"]: o for o in row["objects"]}
        _, times = load_video(tmp_path / row["video"], max_frames=16)
        assert times == [k / 2 for k in range(len(times))]  # the 2-fps grid, the last frame on it
        for conversation in example.video_conversations(times, row["width"], row["height"]):
            (question, answer), tag = conversation.turns[0], conversation.style
            label = re.search(r"(?:Point to|Track|How many) (.+?)(?: are there\?| in the video\.|\n)", question)[1]
            *colour, shape = label.split()
            for t, index, x, y in parse_points(answer):
                k = times.index(t)  # a printed frame time: exactly a sampled frame's
                hit = int(masks[round(t * row["fps"]), int(y / 1000 * row["height"]), int(x / 1000 * row["width"])])
                assert hit, (row["id"], tag, t, x, y)
                o = objects[hit]
                assert SINGULAR.get(shape, o["shape"]) == o["shape"]
                if tag == "tracking":  # an object named by its first colour, followed through a colour change
                    assert hit == index and colour == [o["colour"]]
                else:  # what matches the label in this frame
                    assert colour in ([], [colour_at(o, times[k])])
                checked += 1
    assert checked > 200


def test_cli_writes_images_and_videos(tmp_path, capsys):
    out = tmp_path / "sw"
    main(["synth", "--out", str(out), "--images", "3", "--videos", "2", "--seed", "1", "--video-size", "64"])
    assert "3 images" in capsys.readouterr().out
    assert len((out / "images.jsonl").read_text().splitlines()) == 3
    rows_ = [json.loads(line) for line in (out / "videos.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows_] == ["shapes-video-1-0", "shapes-video-1-1"]
    assert json.loads((out / "videos_info.json").read_text())["videos"] == 2
    for r in rows_:
        assert read_video(out / r["video"]).shape == (r["num_frames"], 64, 64, 3) and (out / r["masks"]).exists()
