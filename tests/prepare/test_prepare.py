"""`nanomolmo2 prepare`: tables in each dataset's own column layout (parquet and JSONL) -> the project's JSONL,
with media served by a local server: unit conversions, grouping per image, failed media left out, reports,
resume, and the datasets reading the result."""

import json
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanomolmo2.cli import main
from nanomolmo2.data.datasets import JsonlDataset, PointingDataset, TextDataset, VideoDataset, VQADataset
from nanomolmo2.prepare.command import prepare
from nanomolmo2.prepare.videos import VideoSources
from tests.rehearsal.tables import SCHEMAS, XY

from .test_download import (
    MediaServer,
    jpeg_bytes,
    leftovers,
    mp4_bytes,
    no_proxy,  # noqa: F401 (an autouse fixture: no proxy between the tests and 127.0.0.1)
    png_bytes,
    quick_downloader,
    sha256,
)

PIXMO_POINTS, MULTI_IMAGE_QA = SCHEMAS["pixmo-points"], SCHEMAS["Molmo2-MultiImageQA"]  # the tables' real layouts
VIDEO_POINT = pa.schema(
    [
        ("video_id", pa.string()),
        ("question", pa.string()),
        ("label", pa.string()),
        ("count", pa.int64()),
        ("two_fps_timestamps", pa.list_(pa.float64())),
        ("points", pa.list_(pa.list_(XY))),
        ("raw_frames", pa.list_(pa.int64())),
        ("raw_timestamps", pa.list_(pa.float64())),
        ("annotator_unsure", pa.bool_()),
        ("category", pa.string()),
        ("video_duration", pa.float64()),
        ("video_source", pa.string()),
        ("clip_start", pa.float64()),
        ("clip_end", pa.float64()),
    ]
)


@pytest.fixture
def server():
    s = MediaServer()
    yield s
    s.close()


def write_parquet(path, rows, schema):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_jsonl(path, rows, bad_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in bad_lines))
    return path


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pixmo_points_percent_to_pixels_grouped_per_image_and_resumed(server, tmp_path, capsys):
    a, rotated = png_bytes(200, 100), jpeg_bytes(100, 60, orientation=6)  # upright: 60 wide, 100 high
    server.routes.update({"/a.png": ("ok", a), "/rot.jpg": ("ok", rotated), "/wrong.png": ("ok", png_bytes(9, 9))})

    def row(path, points, label, method="pointing", sha=None):
        url = server.url(path)
        return dict(image_url=url, image_sha256=sha, points=[{"x": x, "y": y} for x, y in points], count=len(points),
                    label=label, collection_method=method)  # fmt: skip

    rows = [
        row("/a.png", [(25.0, 50.0), (100.0, 0.0)], "dogs", sha=sha256(a)),
        row("/rot.jpg", [(50.0, 25.0)], "a bird", sha=sha256(rotated)),
        row("/a.png", [(10.0, 10.0), (120.0, -5.0)], "cats", "counting", sha=sha256(a)),  # outside: clipped
        row("/missing.png", [], "x", sha="0" * 64),
        row("/wrong.png", [], "y", sha=sha256(a)),
        row("/a.png", [(1.0, 1.0)], "", sha=sha256(a)),  # malformed: no label
    ]
    table = write_parquet(tmp_path / "train-00000-of-00001.parquet", rows, PIXMO_POINTS)
    out = tmp_path / "out"
    media = out / "media"  # inside the dataset's folder: training reads media only from there
    report = prepare("allenai/pixmo-points", tmp_path, out, media, quick_downloader())

    lines = read_lines(out / "pixmo-points.jsonl")
    assert len(lines) == 2
    assert lines[0]["width"] == 200 and lines[0]["height"] == 100
    assert lines[0]["annotations"] == [
        {"task": "pointing", "label": "dogs", "points": [[50.0, 50.0], [200.0, 0.0]]},
        {"task": "counting", "label": "cats", "points": [[20.0, 10.0], [200.0, 0.0]], "count": 2},
    ]
    assert (lines[1]["width"], lines[1]["height"]) == (60, 100)  # EXIF orientation applied
    assert lines[1]["annotations"][0]["points"] == [[30.0, 25.0]]
    assert (out / lines[0]["image"]).read_bytes() == a  # media paths are relative to the JSONL's folder

    assert report["rows"] == 6 and report["lines"] == 2 and report["annotations"] == 3
    assert report["rows_without_media"] == 2 and report["malformed_rows"] == 1
    assert f"{table}:row 6" in report["malformed_examples"][0] and "'label'" in report["malformed_examples"][0]
    assert report["media"]["fetched"] == 2 and report["media"]["present"] == 0 and report["media"]["failed"] == 2
    reasons = sorted(report["media"]["failures"].values())
    assert reasons[0] == "HTTP 404" and reasons[1].startswith("sha256 mismatch")
    assert json.loads((out / "pixmo-points.report.json").read_text()) == report
    assert len([p for p in media.rglob("*") if p.is_file()]) == 2 and not leftovers(media) and not leftovers(out)

    # The prepared folder is a dataset: points become Molmo2's 0-1000 coordinates of the image.
    examples = [PointingDataset(out)[i] for i in range(2)]
    assert 'coords="1 1 250 500 2 1000 000">dogs</points>' in examples[0].conversations[0].turns[0][1]
    assert 'coords="1 1 500 250">a bird</points>' in examples[1].conversations[0].turns[0][1]

    # A second run fetches nothing new and writes the same file.
    before, hits = (out / "pixmo-points.jsonl").read_bytes(), dict(server.hits)
    again = prepare("pixmo-points", tmp_path, out, media, quick_downloader())
    assert again["media"]["fetched"] == 0 and again["media"]["present"] == 2 and again["media"]["failed"] == 2
    assert server.hits["/a.png"] == hits["/a.png"] and server.hits["/rot.jpg"] == hits["/rot.jpg"]
    assert (out / "pixmo-points.jsonl").read_bytes() == before

    # The command line, without downloading: only what is on disk.
    (out / "pixmo-points.jsonl").unlink()
    main(["prepare", "pixmo-points", "--from", str(table), "--out", str(out), "--media-dir", str(media),
          "--no-download"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "6 rows -> 2 lines (3 annotations)" in printed and "already present 2, failed 2" in printed
    assert "2 rows whose media failed, 1 malformed rows" in printed
    assert (out / "pixmo-points.jsonl").read_bytes() == before

    # A media folder outside the output folder is refused: its paths would leave the dataset's folder.
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "pixmo-points", "--from", str(table), "--out", str(tmp_path / "cli"), "--media-dir",
              str(media), "--no-download"])  # fmt: skip
    assert exit_info.value.code == 2 and re.search("--media-dir .* is outside --out", capsys.readouterr().err)


def test_pixmo_image_sets_from_jsonl(server, tmp_path):
    a, b = png_bytes(200, 100), jpeg_bytes(64, 48)
    server.routes.update({"/a.png": ("ok", a), "/b.jpg": ("ok", b), "/page.png": ("ok", b"<html>not an image</html>")})
    A, B, page = server.url("/a.png"), server.url("/b.jpg"), server.url("/page.png")
    media = tmp_path / "out" / "media"

    def run(name, rows, bad_lines=()):
        folder = tmp_path / name
        folder.mkdir()
        write_jsonl(folder / "train.jsonl", rows, bad_lines)
        report = prepare(name, folder, tmp_path / "out", media, quick_downloader())
        return report, read_lines(tmp_path / "out" / f"{name}.jsonl")

    report, lines = run(
        "pixmo-cap",
        [
            {"image_url": A, "caption": "A noisy picture.", "transcripts": ["um, a picture"]},
            {"image_url": page, "caption": "An HTML page served as an image.", "transcripts": []},
        ],
    )
    # the transcripts stay with their caption (Molmo2's stage 1 adds one of them as a second annotation)
    expected = {"task": "caption", "caption": "A noisy picture.", "transcripts": ["um, a picture"]}
    assert [line["annotations"] for line in lines] == [[expected]]
    assert report["rows_without_media"] == 1 and list(report["media"]["unreadable"].values())[0].startswith("unread")

    report, lines = run(
        "pixmo-count",  # points are pixels already; this layout stores them as a struct of lists
        [
            {
                "image_url": B,
                "image_sha256": sha256(b),
                "count": 2,
                "label": "dots",
                "points": {"x": [10.5, 30.0], "y": [20.0, 40.25]},
            },
            {"image_url": B, "image_sha256": sha256(b), "count": 0, "label": "cats", "points": {"x": [], "y": []}},
        ],  # fmt: skip
    )
    assert lines[0]["annotations"] == [
        {"task": "counting", "label": "dots", "points": [[10.5, 20.0], [30.0, 40.25]], "count": 2},
        {"task": "counting", "label": "cats", "points": [], "count": 0},
    ]
    assert report["media"]["fetched"] == 1
    report, lines = run(
        "pixmo-ask-model-anything",
        [
            {"image_url": A, "image_sha256": sha256(a), "question": " What is this? ", "answer": "Noise."},
            {"image_url": A, "image_sha256": sha256(a), "question": "Colours?", "answer": "All of them."},
        ],
        bad_lines=["{not json"],
    )
    assert [a["question"] for a in lines[0]["annotations"]] == ["What is this?", "Colours?"]
    assert report["media"]["present"] == 1  # fetched for pixmo-cap (no hash there), its hash checks out here
    assert report["malformed_rows"] == 1 and report["malformed_examples"][0].startswith(f"{tmp_path}/")
    assert ":3: " in report["malformed_examples"][0]  # file:line of the bad line

    report, lines = run(
        "pixmo-cap-qa",
        [
            {"image_url": A, "question": "How many colours?", "answer": "Many."},
            {
                "image_url": A,
                "question": "[USER] What is it? [ASSISTANT] Noise. [USER] Is it loud? [ASSISTANT]",
                "answer": "No, it is a picture.",
            },
            {"image_url": B, "question": "[USER] Just one turn [ASSISTANT]", "answer": "Fine."},
            {"image_url": B, "question": "[ASSISTANT] starts wrong [USER] x", "answer": "?"},
        ],  # fmt: skip
    )
    assert lines[0]["annotations"][0] == {"task": "vqa", "question": "How many colours?", "answer": "Many."}
    assert lines[0]["annotations"][1]["messages"] == [
        {"role": "user", "content": "What is it?"},
        {"role": "assistant", "content": "Noise."},
        {"role": "user", "content": "Is it loud?"},
        {"role": "assistant", "content": "No, it is a picture."},
    ]
    assert lines[1]["annotations"] == [{"task": "vqa", "question": "Just one turn", "answer": "Fine."}]
    assert report["malformed_rows"] == 1

    report, lines = run(
        "pixmo-point-explanations",
        [
            {
                "image_url": A,
                "image_sha256": sha256(a),
                "question": "What animals?",
                "response": "raw",
                "parsed_response": "Two <|POINT|> and one <|POINT|>.",
                "alt_text": ["dogs", "cat"],
                "inline_text": ["dogs", "cat"],
                "points": [[{"x": 25.0, "y": 50.0}, {"x": 75.0, "y": 50.0}], [{"x": 50.0, "y": 10.0}]],
            },
            {
                "image_url": A,
                "image_sha256": sha256(a),
                "question": "?",
                "response": "r",
                "parsed_response": None,
                "alt_text": [],
                "inline_text": [],
                "points": [],
            },
            {
                "image_url": A,
                "image_sha256": sha256(a),
                "question": "?",
                "response": "r",
                "parsed_response": "<|POINT|>",
                "alt_text": [],
                "inline_text": [],
                "points": [],
            },
        ],  # fmt: skip
    )
    answer = (
        'Two <points coords="1 1 250 500 2 750 500">dogs</points> and one <points coords="1 1 500 100">cat</points>.'
    )
    assert lines[0]["annotations"] == [{"task": "vqa", "question": "What animals?", "answer": answer}]
    assert report["skipped_rows"] == {"no parsed_response": 1} and report["malformed_rows"] == 1

    # Multi-image QA, in parquet (a list of structs) and JSONL (a struct of lists, as `datasets` exports it).
    folder = tmp_path / "Molmo2-MultiImageQA"
    folder.mkdir()
    pairs = [{"question": "Which is wider?", "answer": "Image 1."}, {"question": "Same size?", "answer": "No."}]
    write_parquet(folder / "train.parquet", [{"image_urls": [A, B], "qa_pairs": pairs}], MULTI_IMAGE_QA)
    write_jsonl(
        folder / "validation.jsonl",
        [
            {"image_urls": [A, B], "qa_pairs": {"question": ["How many images?"], "answer": ["Two."]}},
            {"image_urls": [A, server.url("/missing.png")], "qa_pairs": {"question": ["?"], "answer": ["!"]}},
            {"image_urls": [A] * 6, "qa_pairs": {"question": ["?"], "answer": ["!"]}},
        ],
    )
    report = prepare("Molmo2-MultiImageQA", folder, tmp_path / "out", media, quick_downloader())
    lines = read_lines(tmp_path / "out" / "Molmo2-MultiImageQA.jsonl")
    assert len(lines) == 1 and len(lines[0]["images"]) == 2 and len(lines[0]["annotations"]) == 3
    assert report["rows_without_media"] == 1 and report["malformed_rows"] == 1
    assert "at most 5" in report["malformed_examples"][0]
    example = VQADataset(tmp_path / "out")[0]  # every prepared file of the folder reads back
    assert example.images and example.conversations
    assert len(JsonlDataset(tmp_path / "out")) >= 6
    assert not leftovers(media)


def test_videopoint_clips_times_and_pixels(server, tmp_path):
    video = mp4_bytes(tmp_path, width=64, height=48, frames=10, fps=5.0)  # last frame at 1.8 s
    server.routes["/vid1.mp4"] = ("ok", video)
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)
    (out / "videos" / "vid2_2fps.mp4").write_bytes(video)  # found on disk, named as the dataset's helpers do
    urls = tmp_path / "youtube_id_to_urls_mapping.json"
    urls.write_text(json.dumps({"vid1": {"gcp_url": server.url("/vid1.mp4"), "youtube_url": "https://youtu.be/x"}}))

    def row(video_id, label, times, frames, clip=(None, None), unsure=False, duration=1.8):
        return dict(video_id=video_id, question=f"How many {label}?", label=label, count=sum(map(len, frames)),
                    two_fps_timestamps=times, points=[[{"x": x, "y": y} for x, y in f] for f in frames],
                    raw_frames=[], raw_timestamps=times, annotator_unsure=unsure, category="object",
                    video_duration=duration, video_source="youtube", clip_start=clip[0], clip_end=clip[1])  # fmt: skip

    rows = [
        row("vid1", "red bars", [0.5, 1.0], [[(50.0, 50.0)], [(25.0, 75.0), (100.0, 100.0)]]),
        row("vid1", "cars", [], []),
        row("vid1", "birds", [0.5], [[(1.0, 1.0)]], unsure=True),
        row("vid1", "red bars", [1.0], [[(50.0, 50.0)]], clip=(0.5, 1.5), duration=100.0),  # a long video's clip
        row("vid1", "cats", [1.0], [[(50.0, 50.0)]], clip=(0.0, 1.8)),  # a short video is used whole: line 0
        row("vid1", "dogs", [1.0], [[(50.0, 50.0)]], duration=100.0),  # a long video without a clip
        row("vid1", "owls", [2.0], [[(50.0, 50.0)]], clip=(0.5, 1.5), duration=100.0),  # a point outside its clip
        row("vid2", "blue bars", [0.0], [[(10.0, 20.0)]]),
        row("nowhere", "ghosts", [], []),
        row("vid1", "bad", [0.5, 1.0], [[(1.0, 1.0)]]),  # malformed: 2 timestamps, 1 frame of points
    ]
    folder = tmp_path / "data"
    folder.mkdir()
    write_parquet(folder / "train-00000-of-00001.parquet", rows, VIDEO_POINT)
    videos = VideoSources.from_args([str(out / "videos")], str(urls))
    report = prepare("Molmo2-VideoPoint", folder, out, None, quick_downloader(), videos)

    lines = read_lines(out / "Molmo2-VideoPoint.jsonl")
    assert len(lines) == 3
    assert (lines[0]["width"], lines[0]["height"]) == (64, 48) and "clip_start" not in lines[0]
    assert lines[0]["annotations"] == [
        {"task": "counting", "label": "red bars", "points": [[0.5, 32.0, 24.0], [1.0, 16.0, 36.0], [1.0, 64.0, 48.0]],
         "count": 3, "question": "How many red bars?"},
        {"task": "counting", "label": "cars", "points": [], "count": 0, "question": "How many cars?"},
        {"task": "counting", "label": "cats", "points": [[1.0, 32.0, 24.0]], "count": 1, "question": "How many cats?"},
    ]  # fmt: skip
    assert lines[1]["video"] == lines[0]["video"] and (lines[1]["clip_start"], lines[1]["clip_end"]) == (0.5, 1.5)
    assert lines[2]["video"] == "videos/vid2_2fps.mp4"
    assert lines[2]["annotations"][0]["points"] == [[0.0, 6.4, 9.6]]
    assert report["skipped_rows"] == {
        "annotator unsure": 1,
        "long video without a clip": 1,
        "points outside the clip": 1,
    }
    assert report["rows_without_media"] == 1 and report["malformed_rows"] == 1
    assert report["media"]["fetched"] == 1 and server.hits["/vid1.mp4"] == 1

    # The video dataset reads it: the points land on sampled frames.
    example = VideoDataset(out)[0]
    frames, times, (width, height) = example.video.load()
    assert (width, height) == (frames.shape[2], frames.shape[1]) == (64, 48)
    conversations = example.video_conversations(times, width, height)
    assert [c.style for c in conversations] == ["video_counting"] * 3
    assert "red bars" in conversations[0].turns[0][1] and conversations[1].turns[0][1] == "There are none."


def test_tulu_chat_through_the_command_line(tmp_path, capsys):
    system, user, assistant = "system", "user", "assistant"
    rows = [
        {"id": "a", "source": "s", "messages": [
            {"role": system, "content": "Be brief."}, {"role": user, "content": "Hi"},
            {"role": assistant, "content": "Hello!"}, {"role": user, "content": "Unanswered?"}]},
        {"id": "b", "source": "s", "messages": [{"role": assistant, "content": "I speak first."}]},
        {"id": "c", "source": "s", "messages": [
            {"role": user, "content": "1+1?"}, {"role": assistant, "content": "2"},
            {"role": user, "content": "2+2?"}, {"role": assistant, "content": "4"}]},
    ]  # fmt: skip
    table = write_jsonl(tmp_path / "tulu.jsonl", rows)
    main(["prepare", "allenai/tulu-3-sft-mixture", "--from", str(table), "--out", str(tmp_path / "out")])
    assert "3 rows -> 2 lines" in capsys.readouterr().out
    lines = read_lines(tmp_path / "out" / "tulu-3-sft-mixture.jsonl")
    assert lines[0]["annotations"][0]["messages"] == [
        {"role": "user", "content": "System: Be brief.\nHi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert "image" not in lines[0] and len(lines[1]["annotations"][0]["messages"]) == 4
    dataset = TextDataset(tmp_path / "out")
    assert len(dataset) == 2 and dataset[1].conversations[0].turns == [("1+1?", "2"), ("2+2?", "4")]
    main(["prepare", "tulu-3-sft-mixture", "--from", str(table), "--out", str(tmp_path / "one"), "--limit", "1"])
    assert "1 rows -> 1 lines" in capsys.readouterr().out


def test_from_a_downloaded_dataset_repo_reads_its_train_tables(tmp_path, capsys):
    """`--from DIR` where DIR is a dataset repo as `hf download --repo-type dataset --local-dir DIR` leaves it: the
    train split under DIR/data/ is read (not the test split beside it); two train folders are ambiguous."""
    chat = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    schema = pa.schema([("id", pa.string()), ("messages", pa.list_(pa.struct([("role", pa.string()),
                                                                            ("content", pa.string())])))])  # fmt: skip
    repo = tmp_path / "tulu"
    (repo / "data").mkdir(parents=True)
    (repo / "README.md").write_text("# card")
    for split, n in [("train-00000-of-00002", 2), ("train-00001-of-00002", 3), ("test-00000-of-00001", 7)]:
        rows = [{"id": f"{split}-{i}", "messages": chat} for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), repo / "data" / f"{split}.parquet")
    main(["prepare", "allenai/tulu-3-sft-mixture", "--from", str(repo), "--out", str(tmp_path / "out")])
    assert "5 rows -> 5 lines" in capsys.readouterr().out
    (repo / "other").mkdir()
    (repo / "other" / "train-00000-of-00001.parquet").write_bytes(
        (repo / "data" / "test-00000-of-00001.parquet").read_bytes()
    )
    with pytest.raises(SystemExit) as stop:
        main(["prepare", "allenai/tulu-3-sft-mixture", "--from", str(repo), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "no table at" in capsys.readouterr().err


def test_clear_errors(tmp_path, monkeypatch, capsys):
    """User mistakes: one line on stderr and exit status 2."""

    def fails(argv: list[str], message: str) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err

    fails(["prepare", "allenai/pixmo-nothing", "--from", str(tmp_path), "--out", str(tmp_path / "out")],
          "unknown dataset 'allenai/pixmo-nothing'")  # fmt: skip
    fails(["prepare", "pixmo-cap", "--from", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")], "no table at")
    table = write_parquet(tmp_path / "t.parquet", [], PIXMO_POINTS)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    fails(["prepare", "pixmo-points", "--from", str(table), "--out", str(tmp_path / "out"), "--no-download"],
          "needs pyarrow")  # fmt: skip
