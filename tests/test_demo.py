"""The quick demo end to end: data, three training stages, evaluation, the report and the picture."""

import json

import PIL.Image
import pytest

from nanomolmo2.demo import main


@pytest.mark.slow
def test_quick_demo_learns(tmp_path):
    metrics = main(["--quick", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    assert (tmp_path / "run" / "stage3" / "final" / "model.safetensors").is_file()  # 2 steps: it runs, no more
    # The stages long enough to tell: stage 1's held-out loss falls by half or more (measured: 3.72 -> 1.15),
    # stage 2's (new: videos) by 15% or more (measured 0.66x and 0.76x: bf16 on 2 threads is not bit-stable).
    for stage, fraction in ((1, 0.5), (2, 0.85)):
        log = (tmp_path / "run" / f"stage{stage}" / "metrics.jsonl").read_text().splitlines()
        validation = [json.loads(line)["val_loss"] for line in log if json.loads(line).get("val_loss") is not None]
        assert validation[-1] < fraction * validation[0], (stage, validation)
    # After ~1 minute the metrics themselves are still noise on 10 held-out images (captions, video and text
    # at 0; see README / docs/LOG.md for the full demo), so here they are only checked to be well formed.
    assert all(0.0 <= value <= 1.0 for name, value in metrics.items() if name != "seconds")
    for name in ("caption_accuracy", "vqa_accuracy", "count_accuracy", "point_f1"):
        assert f"blank_{name}" in metrics
    assert metrics["seconds"] > 0
    picture = PIL.Image.open(tmp_path / "run" / "points.png")
    assert picture.width > 400 and picture.height > 200
