"""Bad training data end to end (nanomolmo2/data/image_datasets.py, video_datasets.py, loader.py, training/trainer.py):
a run over a folder seeded with corrupt, truncated and missing images and videos, malformed JSONL lines, empty
answers and an over-long sample finishes, trains on the good rows, and reports every bad line with its file and
line number and the reason, in the log and in the final count."""

import json
import logging
import math
import re

import numpy as np

from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.videos import write_shapesworld_videos
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config

CAPTION = [{"task": "caption", "caption": "A red circle."}]
IMAGE = "images/000001.png"
# (a line of bad.jsonl, what the log says about it); line k of the file is entry k of this list
BAD_LINES = [
    ({"image": "bad/random_bytes.png", "annotations": CAPTION}, "UnidentifiedImageError"),
    ({"image": "bad/truncated.png", "annotations": CAPTION}, "image file is truncated"),
    ({"image": "bad/missing.png", "annotations": CAPTION}, "No such file"),
    ({"video": "bad/truncated.mp4", "annotations": CAPTION}, "truncated.mp4: not a readable video"),
    ({"video": "bad/text.mp4", "annotations": CAPTION}, "text.mp4: not a readable video"),
    ('{"image": "images/000001.png", "annotations": [', "malformed line"),  # broken JSON
    ({"image": IMAGE}, "'annotations' list"),  # no annotations
    ({"image": IMAGE, "annotations": []}, "no annotations"),
    ({"image": IMAGE, "annotations": "caption"}, "'annotations' list"),  # wrong types from here on
    ({"image": IMAGE, "annotations": ["caption"]}, "'annotations' list of objects"),
    ({"image": 5, "annotations": CAPTION}, "'image' must be a path"),
    ({"image": IMAGE, "annotations": [{"task": "pointing", "label": "x", "points": "abc"}]}, "unpack"),
    ({"image": IMAGE, "annotations": [{"task": "caption", "caption": ["A", "circle"]}]}, "non-empty text"),
    ({"image": IMAGE, "annotations": [{"task": "caption", "caption": ""}]}, "non-empty text"),  # empty answers
    ({"image": IMAGE, "annotations": [{"task": "vqa", "question": "Colour?", "answer": " "}]}, "non-empty text"),
    ({"video": "videos/000000.mp4", "annotations": [{"task": "caption", "caption": ""}]}, "non-empty text"),
    ({"image": IMAGE, "annotations": [{"task": "caption", "caption": "word " * 600}]}, "tokens > seq_len"),
]
MALFORMED_LINES = 5  # lines 6-10 are no rows at all; the others are rows with unusable media or annotations


def write_bad_data(folder):
    """Good ShapesWorld images and videos, plus bad.jsonl with the lines above and the broken files they use."""
    write_shapesworld(folder, num_images=6, seed=0, image_size=56, num_text=1)
    write_shapesworld_videos(folder, num_videos=2, seed=0, image_size=56, max_seconds=3)
    (folder / "bad").mkdir()
    (folder / "bad" / "random_bytes.png").write_bytes(np.random.default_rng(0).bytes(3000))
    png = (folder / "images" / "000000.png").read_bytes()
    (folder / "bad" / "truncated.png").write_bytes(png[: len(png) // 2])
    mp4 = (folder / "videos" / "000001.mp4").read_bytes()
    (folder / "bad" / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    (folder / "bad" / "text.mp4").write_text("this is a text file, not a video")
    lines = [row if isinstance(row, str) else json.dumps(row) for row, _ in BAD_LINES]
    (folder / "bad.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_bad_inputs_are_skipped_reported_and_counted(tmp_path, caplog):
    data = write_bad_data(tmp_path / "data")
    mixture = [[0.6, ["caption", "pointing", "vqa"]], [0.3, ["video"]], [0.1, ["text"]]]
    config = tiny_config(data, tmp_path / "run", max_steps=10, mixture=mixture, max_conversations=2,
                         output_vocabulary="data")  # fmt: skip
    caplog.set_level(logging.INFO)
    trainer = Trainer(config)
    last = trainer.train()
    trainer.close()

    # it trained: every step, finite losses, no update skipped
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == list(range(1, 11))
    assert all(math.isfinite(m["loss"]) and not m["skipped_update"] for m in steps)

    # every bad line is reported with its file, line number and reason; no good row is
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for number, (_, reason) in enumerate(BAD_LINES, start=1):
        about = [w for w in warnings if f"bad.jsonl:{number}:" in w]
        assert any(reason in w for w in about), (number, reason, about)
    assert not [w for w in warnings if re.search(r"(images|videos|text)\.jsonl", w)]

    # the final count: each skip of an item (a row can come round again) by reason, and the malformed lines
    final = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("final model in"))
    count, reasons, malformed = re.search(
        r"skipped (\d+) unusable data items \((.*)\) and (\d+) malformed", final
    ).groups()
    assert int(count) == last["skipped_items"] >= len(BAD_LINES) - MALFORMED_LINES
    assert int(malformed) == MALFORMED_LINES
    for reason in ("UnidentifiedImageError", "OSError", "FileNotFoundError", "VideoError", "ValueError", "too long"):
        assert re.search(rf"\b{reason} \d+", reasons), (reason, reasons)
