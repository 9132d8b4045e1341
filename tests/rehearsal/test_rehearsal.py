"""The dress rehearsal (run.py, reduced with --quick) end to end, and what each of its steps must have made.

Every expected number is worked out from how tables.py builds the data (which images it breaks, and how), not read
back from the code under test: image i of a table set misbehaves when i % 10 is 3 (404), 5 (a wrong hash in the
tables that state one), 7 (a transfer cut short); 8 is a slow host that does answer.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .run import ROOT, SIZES

QUICK = SIZES["quick"]
FAULTY = {"404": {3}, "hash": {5}, "broken": {7}}


def broken(images: int, faults: set[int]) -> int:
    return sum(i % 10 in faults for i in range(images))


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    result = subprocess.run(
        [sys.executable, "-m", "tests.rehearsal.run", "--out", str(out), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out, json.loads((out / "rehearsal.json").read_text())["steps"]


@pytest.mark.slow
def test_checkpoints_and_tables_come_from_the_hub_cache(rehearsal):
    out, steps = rehearsal
    hub = out / "hf_home" / "hub"
    for repo in ["models--Qwen--Qwen3-0.6B", "models--allenai--Molmo2-4B", "datasets--allenai--pixmo-cap",
                 "datasets--allenai--Molmo2-VideoPoint", "datasets--allenai--tulu-3-sft-mixture"]:  # fmt: skip
        commit = (hub / repo / "refs" / "main").read_text()
        assert any((hub / repo / "snapshots" / commit).rglob("*")), repo
    config = json.loads((out / "stage1" / "config.json").read_text())
    assert (config["molmo2_path"], config["qwen3_path"]) == ("allenai/Molmo2-4B", "Qwen/Qwen3-0.6B")
    # The frozen ViT of every stage's final/ is the Molmo2 checkpoint's (named by Hub id, read from the cache), rounded
    # to bf16 where training ran in bf16 autocast (a frozen ViT is held in bf16 there: trainer.py).
    snapshot = hub / "models--allenai--Molmo2-4B" / "snapshots"
    (shard,) = [p for p in snapshot.rglob("*") if p.name == "model-00002-of-00002.safetensors"]
    released = load_file(shard)
    vit = {k: v for k, v in released.items() if ".image_vit." in k}
    assert vit
    for stage in (1, 2, 3):
        final = load_file(out / f"stage{stage}" / "final" / "model.safetensors")
        assert all(torch.equal(final[k].float(), v.float()) or torch.equal(final[k].float(), v.bfloat16().float())
                   for k, v in vit.items()), stage  # fmt: skip


@pytest.mark.slow
def test_download_all_fetched_over_https_and_counted_the_faults(rehearsal):
    out, steps = rehearsal
    reports = steps["data"]["reports"]
    names = {"pixmo-cap", "pixmo-points", "pixmo-count", "pixmo-ask-model-anything", "pixmo-cap-qa",
             "Molmo2-MultiImageQA", "Molmo2-VideoPoint", "tulu-3-sft-mixture"}  # fmt: skip
    assert set(reports) == names and all((out / "data" / f"{n}.jsonl").stat().st_size for n in names)
    images = QUICK["images"]
    unreachable = broken(images, FAULTY["404"] | FAULTY["broken"])
    cap = reports["pixmo-cap"]  # no hashes in pixmo-cap: only the 404s and cut transfers fail
    assert (cap["rows"], cap["lines"], cap["failed"]) == (images, images - unreachable, unreachable)
    assert cap["failures"] == ["HTTP 404", "broken transfer"]  # the kinds of failure, before their details
    points = reports["pixmo-points"]  # pixmo-points states hashes: the wrong one fails too
    assert points["failed"] == broken(images, FAULTY["404"] | FAULTY["broken"] | FAULTY["hash"])
    assert points["failures"] == ["HTTP 404", "broken transfer", "sha256 mismatch"]
    assert reports["tulu-3-sft-mixture"]["lines"] == images // 2 and reports["Molmo2-VideoPoint"]["failed"] == 0
    # The slow host's image (index 8) arrived whole; every media path stays inside the data root.
    for line in (out / "data" / "pixmo-cap.jsonl").read_text().splitlines():
        row = json.loads(line)
        path = (out / "data" / row["image"]).resolve()
        assert path.is_relative_to((out / "data" / "media").resolve()) and path.is_file()
    assert steps["server"]["hits"] > 0
    heldout = steps["heldout"]["reports"]
    assert set(heldout) == {"pixmo-points", "pixmo-count", "pixmo-ask-model-anything"}
    assert heldout["pixmo-points"]["failed"] == broken(QUICK["heldout"], {3, 5, 7})


@pytest.mark.slow
def test_three_stages_under_torchrun_each_from_the_last(rehearsal):
    out, steps = rehearsal
    sft = {"pixmo-ask-model-anything", "pixmo-cap", "pixmo-cap-qa", "Molmo2-MultiImageQA", "Molmo2-VideoPoint",
           "pixmo-points", "pixmo-count", "tulu-3-sft-mixture"}  # fmt: skip
    expected = {1: {"pixmo-cap", "pixmo-points", "pixmo-count", "tulu-3-sft-mixture"}, 2: sft, 3: sft}
    for stage, max_steps in zip((1, 2, 3), QUICK["steps"], strict=True):
        record = steps[f"stage{stage}"]
        assert record["commands"][0]["args"][1:3] == ["--nproc_per_node", "2"]
        assert len(record["losses"]) == max_steps and all(0 < loss < 100 for loss in record["losses"])
        assert set(record["datasets"]) == expected[stage]
        final = out / f"stage{stage}" / "final"
        for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
            assert (final / name).is_file(), (stage, name)
        config = json.loads((out / f"stage{stage}" / "config.json").read_text())
        assert config["init_from"] == ("" if stage == 1 else str(out / f"stage{stage - 1}" / "final"))
    # stage 2's academic sets are not in the data root: each is a notice (one per rank), not an error
    assert steps["stage2"]["optional_notices"] == 2 * 5 and steps["stage1"]["optional_notices"] == 2


@pytest.mark.slow
def test_transformers_serves_the_final_folder_with_our_greedy_answer(rehearsal):
    _, steps = rehearsal
    serving = steps["serving"]
    assert serving["model_class"] == "Molmo2ForConditionalGeneration"
    assert serving["transformers_tokens"] and serving["transformers_answer"] == serving["nanomolmo2_answer"]


@pytest.mark.slow
def test_eval_of_the_prepared_heldout_folder(rehearsal):
    out, steps = rehearsal
    metrics = steps["eval"]["metrics"]
    for name in ("point_f1", "count_accuracy", "vqa_accuracy", "pixmo-points/point_f1", "pixmo-count/count_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["questions"] > 0 and json.loads((out / "eval.json").read_text())["answers"]
    refused = steps["eval"]["nothing_to_evaluate"]
    assert refused.startswith("nanomolmo2 eval: error: nothing to evaluate in") and "\n" not in refused
