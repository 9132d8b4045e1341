"""The quick demo end to end: data, three training stages, evaluation, the report and the picture."""

import json

import PIL.Image

from nanomolmo2.demo import main


def test_quick_demo_learns(tmp_path):
    metrics = main(["--quick", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    for stage in (1, 2, 3):  # every stage ends below where it started
        log = (tmp_path / "run" / f"stage{stage}" / "metrics.jsonl").read_text().splitlines()
        lines = [json.loads(line) for line in log]
        assert lines[-1]["loss"] < lines[0]["loss"], stage
        if stage == 1:  # and the held-out loss falls too
            validation = [line["val_loss"] for line in lines if line.get("val_loss") is not None]
            assert validation[-1] < validation[0]
    # Above chance: counts of 1-4 objects or 0 guessed at random are right 1 time in 5; a model that has
    # not learnt the answer formats scores 0 on everything.
    assert metrics["count_accuracy"] > 0.2
    assert metrics["count_within_one"] > metrics["count_accuracy"]
    for name in ("vqa_accuracy", "point_f1", "video_qa_accuracy", "text_accuracy"):
        assert metrics[name] > 0.0, name
    for name in ("caption_accuracy", "vqa_accuracy", "count_accuracy", "point_f1"):
        assert f"blank_{name}" in metrics
    assert metrics["seconds"] > 0
    picture = PIL.Image.open(tmp_path / "run" / "points.png")
    assert picture.width > 400 and picture.height > 200
