"""The quick demo end to end: data, three training stages, evaluation, the report and the picture."""

import json

import PIL.Image

from nanomolmo2.demo import main


def test_quick_demo_learns(tmp_path):
    metrics = main(["--quick", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    assert (tmp_path / "run" / "stage3" / "final" / "model.safetensors").is_file()  # 2 steps: it runs, no more
    for stage in (1, 2):  # the stages that train long enough to tell end below where they started
        log = (tmp_path / "run" / f"stage{stage}" / "metrics.jsonl").read_text().splitlines()
        lines = [json.loads(line) for line in log]
        assert lines[-1]["loss"] < lines[0]["loss"], stage
        if stage == 1:  # and the held-out loss falls too
            validation = [line["val_loss"] for line in lines if line.get("val_loss") is not None]
            assert validation[-1] < validation[0]
    # Above chance after ~1 minute of training: counts of 0-4 guessed at random are right 1 time in 5, and
    # an untrained model writes no parseable points at all. (Captions, VQA, video and text need longer:
    # see README / docs/LOG.md for the full demo.)
    assert metrics["count_accuracy"] > 0.2
    assert metrics["count_within_one"] >= metrics["count_accuracy"]
    assert metrics["point_f1"] > 0.0
    for name in ("caption_accuracy", "vqa_accuracy", "count_accuracy", "point_f1"):
        assert f"blank_{name}" in metrics
    assert metrics["seconds"] > 0
    picture = PIL.Image.open(tmp_path / "run" / "points.png")
    assert picture.width > 400 and picture.height > 200
