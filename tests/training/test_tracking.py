"""Run tracking (TensorBoard and W&B offline) and the model card a run writes next to its final model."""

import json
import struct
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from nanomolmo2.models import NanoMolmo2
from nanomolmo2.training.model_card import add_evaluation
from nanomolmo2.training.tracking import Tracker, flatten, group_grad_norms
from nanomolmo2.training.trainer import run

from .conftest import tiny_config

EXPECTED = ("loss", "lr/llm", "lr/connector", "grad_norm", "grad_norms/llm", "grad_norms/connector", "tokens_per_s",
            "mfu", "padding_fraction", "skipped_items", "val_loss")  # fmt: skip


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file: a 7-byte file header, then LevelDB-log records (CRC32,
    length, type: 1 whole, 2 first, 3 middle, 4 last piece) in 32 KiB blocks, a block's tail under 7 bytes unused."""
    from wandb.proto import wandb_internal_pb2

    data, position, pieces, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if (left := 32768 - position % 32768) < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero padding up to the end of the block
            position += left
            continue
        pieces = (b"" if kind in (1, 2) else pieces) + data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records


def test_group_grad_norms_are_the_norms_of_each_groups_gradients():
    a, b, c = (
        torch.nn.Parameter(torch.zeros(3)),
        torch.nn.Parameter(torch.zeros(2, 2)),
        torch.nn.Parameter(torch.zeros(5)),
    )
    a.grad, b.grad = torch.tensor([3.0, 0.0, 4.0]), torch.full((2, 2), 6.0)  # c has none
    norms = group_grad_norms({"first": [a], "second": [b, c], "none": [c]})
    assert norms.tolist() == [5.0, 12.0, 0.0]


def test_flatten_names_nested_numbers_and_drops_the_rest():
    flat = flatten({"loss": 1.5, "lr": {"llm": 1e-4}, "skipped": {"too_long": 2}, "skipped_update": False, "x": "a"})
    assert flat == {"loss": 1.5, "lr/llm": 1e-4, "skipped/too_long": 2.0}
    with pytest.raises(ValueError, match="unknown --log backend"):
        Tracker("tensorboard,mlflow", Path("unused"), {}, {})


@pytest.mark.slow
def test_a_run_logs_to_tensorboard_and_wandb_offline_and_writes_its_model_card(shapes_data, tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    config = tiny_config(shapes_data, out, max_steps=4, log="tensorboard,wandb", peak_flops=1e12,
                         val_data=str(shapes_data), eval_every=2, val_batches=1)  # fmt: skip
    run(config)

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for metrics in lines:  # torch's clip measured the global norm; the per-group norms must add up to it
        assert sum(v**2 for v in metrics["grad_norms"].values()) ** 0.5 == pytest.approx(metrics["grad_norm"], rel=1e-5)
        assert 0.0 <= metrics["padding_fraction"] < 1.0 and metrics["mfu"] > 0

    # W&B, offline: the run on disk, with the start summary as its config and every number in its history
    records = wandb_records(next((out / "wandb").glob("offline-run-*/run-*.wandb")))
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    start = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert start["config"]["model"]["llm"]["hidden_size"] == 32 and start["config"]["log"] == "tensorboard,wandb"
    assert start["git_commit"] and start["data"]["folder"] == str(shapes_data)
    assert start["data"]["mixture"] == config.mixture and start["data"]["info"]["images"] == 40
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["_step"] for h in history] == [m["step"] for m in lines]
    assert [h["loss"] for h in history] == pytest.approx([m["loss"] for m in lines])
    for name in EXPECTED:
        assert any(name in h for h in history), name
    assert run_record.run_id == (out / "wandb-run-id").read_text()

    # TensorBoard: the same scalars, and the start summary as text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    for name in EXPECTED:
        assert name in events.Tags()["scalars"], name
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([m["loss"] for m in lines])
    assert {"config/text_summary", "git_commit/text_summary", "data/text_summary"} <= set(events.Tags()["tensors"])

    # the model card, as the Hub reads it
    card = ModelCard.load(out / "final" / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.library_name == "transformers" and "nanomolmo2" in card.data.tags
    total = sum(p.numel() for p in NanoMolmo2(config.model).parameters())  # as trained (a tied head counts once)
    assert f"| parameters: total | {total:,} |" in card.text
    assert "**4 steps** of 2 packed sequences of 384 tokens" in card.text
    assert "hidden 32, 2 layers, 2 query / 1 key-value heads of 16" in card.text
    for rate, kinds in config.mixture:
        assert f"| {rate:g} | {', '.join(kinds)} |" in card.text
    val_loss = [m["val_loss"] for m in lines if "val_loss" in m][-1]
    assert f"| val_loss | {val_loss:.4f} |" in card.text
    assert "AutoModelForImageTextToText.from_pretrained" in card.text and "NanoMolmo2.from_pretrained" in card.text


def test_evaluation_numbers_are_added_to_a_card(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: apache-2.0\n---\n\n## Evaluation\n\n<!-- evaluation -->\nNot evaluated yet.\n"
                    "<!-- /evaluation -->\n\n## Use\n\nsoon\n")  # fmt: skip
    assert add_evaluation(tmp_path, {"point_f1": 0.5, "vqa_accuracy": 0.25}, "On held-out data.")
    assert add_evaluation(tmp_path, {"count_accuracy": 0.75}, "Again.")
    text = card.read_text()
    assert "Not evaluated" not in text and text.endswith("## Use\n\nsoon\n")
    assert text.index("| point_f1 | 0.5000 |") < text.index("Again.") < text.index("| count_accuracy | 0.7500 |")
    assert not add_evaluation(tmp_path / "elsewhere", {"x": 1.0}, "")


def test_the_card_shows_mixture_entries_of_every_form():
    """The packaged stage-2 mixture names datasets as strings and as tables (a size standing in, optional sets)."""
    from nanomolmo2.training.config import load_config
    from nanomolmo2.training.model_card import training

    text = training(load_config("stage2"), 10, {})
    assert "| 0.15 | pixmo-ask-model-anything, pixmo-cap (as 100,000 rows), pixmo-cap-qa, Molmo2-MultiImageQA |" in text
    assert "| 0.25 | ChartQA (optional), DocumentVQA (optional)," in text
    mixture = [[1, ["images:caption,vqa", {"name": "x", "rate": 0.5}]]]
    assert "| 1 | images:caption,vqa, x x0.5 |" in training(load_config("stage1", {"mixture": mixture}), 1, {})
