"""JSONL datasets and the data stream: prompts and answers, malformed lines, corrupt files, exact resume."""

import json
import logging

import numpy as np
import PIL.Image
import pytest

from nanomolmo2.data.datasets import CaptioningDataset, JsonlDataset, PointingDataset, TextDataset, VQADataset
from nanomolmo2.data.loader import DataStream
from nanomolmo2.data.mixture import Mixture
from nanomolmo2.data.processor import Processor


def write_dataset(folder, num_images=12, corrupt=()):
    """A small dataset in the project's format; `corrupt` image indices get broken files."""
    (folder / "images").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(num_images):
        path = folder / "images" / f"{i}.png"
        if i in corrupt:
            path.write_bytes(b"not a png at all")
        else:
            PIL.Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
        rows.append(
            {
                "image": f"images/{i}.png",
                "annotations": [
                    {"task": "caption", "caption": f"Picture number {i}."},
                    {"task": "pointing", "label": "dots", "points": [[8.0, 6.0], [40.0, 30.0]]},
                    {"task": "pointing", "label": "cats", "points": []},
                    {"task": "counting", "label": "dots", "points": [[8.0, 6.0], [40.0, 30.0]], "count": 2},
                    {"task": "counting", "label": "dots", "points": [[8.0, 6.0]], "count": 1, "style": "count"},
                    {"task": "vqa", "question": "Is it a picture?", "answer": "Yes."},
                    {"task": "vqa", "question": "Which?", "options": ["a", "b"], "answer": "b"},
                ],
            }
        )
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{broken json")
    lines.insert(5, json.dumps(["not", "an", "object"]))
    lines.append(
        json.dumps(
            {
                "annotations": [
                    {
                        "task": "chat",
                        "messages": [
                            {"role": "user", "content": "What is 3 + 4?"},
                            {"role": "assistant", "content": "7."},
                        ],
                    }
                ]
            }
        )
    )
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_tasks_become_molmo2_conversations(tmp_path, caplog):
    folder = write_dataset(tmp_path / "d")
    with caplog.at_level(logging.WARNING):
        everything = JsonlDataset(folder)
    assert everything.malformed_lines == 2
    assert "data.jsonl:4" in caplog.text and "data.jsonl:6" in caplog.text  # file and line number
    example = PointingDataset(folder)[0]
    answers = {turns[0][0]: turns[0][1] for turns in (c.turns for c in example.conversations)}
    assert answers["Point to dots\nPlease say 'There are none.' if it is not in the image."] == (
        '<points coords="1 1 100 100 2 500 500">dots</points>'
    )
    assert answers["Point to cats\nPlease say 'There are none.' if it is not in the image."] == "There are none."
    counts = [c.turns[0][1] for c in example.conversations if c.turns[0][0] == "How many dots are there?"]
    assert counts == ['Counting the <points coords="1 1 100 100 2 500 500">dots</points> shows a total of 2.', "1"]
    vqa = VQADataset(folder)[0].conversations
    assert vqa[1].turns[0] == ("Which?\nA. a\nB. b", "b")
    assert len(CaptioningDataset(folder)) == 12 and len(TextDataset(folder)) == 1
    assert TextDataset(folder)[0].images == []


def test_stream_skips_corrupt_images_and_reports_them(tmp_path, caplog):
    folder = write_dataset(tmp_path / "d", corrupt=(2, 5))
    (folder / "images" / "7.png").unlink()  # a missing file
    mixture = Mixture([(1.0, [CaptioningDataset(folder)])], seed=0)
    processor = Processor(crop_size=56, max_crops=0)
    stream = DataStream(mixture, processor, rows=2, seq_len=256)
    with caplog.at_level(logging.WARNING):
        batches = [b for _, (b,) in zip(range(6), stream, strict=False)]
    assert len(batches) == 6
    assert sum(stream.skipped.values()) >= 3 and "2.png" in caplog.text and "7.png" in caplog.text
    assert all(b["input_ids"].shape == (2, 256) for b in batches)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_exactly(tmp_path, workers):
    folder = write_dataset(tmp_path / "d")
    mixture = Mixture([(0.7, [PointingDataset(folder)]), (0.3, [TextDataset(folder)])], seed=5)
    processor = Processor(crop_size=56, max_crops=0)
    straight = DataStream(mixture, processor, rows=2, seq_len=300, num_workers=workers)
    reference = [b["input_ids"] for _, (b,) in zip(range(8), straight, strict=False)]
    first = DataStream(mixture, processor, rows=2, seq_len=300, num_workers=workers)
    part = [b["input_ids"] for _, (b,) in zip(range(3), first, strict=False)]
    state = json.loads(json.dumps(first.state()))  # survives a JSON round trip (checkpoints)
    second = DataStream(mixture, processor, rows=2, seq_len=300, num_workers=workers, state=state)
    part += [b["input_ids"] for _, (b,) in zip(range(5), second, strict=False)]
    assert all(a.equal(b) for a, b in zip(part, reference, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_one_stream_serves_a_ranks_shards_with_one_worker_pool(tmp_path, workers):
    """Two shards in one stream (one pool of workers) give each shard exactly the batches a stream of its own
    would, and the pair resumes exactly from its saved state."""
    folder = write_dataset(tmp_path / "d")
    mixture = Mixture([(0.7, [PointingDataset(folder)]), (0.3, [TextDataset(folder)])], seed=5)
    processor = Processor(crop_size=56, max_crops=0)
    options = dict(rows=2, seq_len=300, num_workers=workers, shard_count=2)
    together = DataStream(mixture, processor, shards=[0, 1], **options)
    assert together._loader.num_workers == workers  # one pool for both shards, not one per shard
    steps = [step for _, step in zip(range(6), together, strict=False)]
    for shard in (0, 1):
        alone = DataStream(mixture, processor, shards=[shard], **options)
        own = [b for _, (b,) in zip(range(6), alone, strict=False)]
        assert all(step[shard]["input_ids"].equal(b["input_ids"]) for step, b in zip(steps, own, strict=True))
    first = DataStream(mixture, processor, shards=[0, 1], **options)
    _ = [step for _, step in zip(range(2), first, strict=False)]
    state = json.loads(json.dumps(first.state()))  # as a checkpoint keeps it: shard keys become strings
    second = DataStream(mixture, processor, shards=[0, 1], state=state, **options)
    resumed = [step for _, step in zip(range(4), second, strict=False)]
    for want, got in zip(steps[2:], resumed, strict=True):
        assert all(w["input_ids"].equal(g["input_ids"]) for w, g in zip(want, got, strict=True))
