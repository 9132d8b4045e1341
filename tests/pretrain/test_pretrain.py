"""The tiny model's pretrained parts: a short `make pretrained` learns, writes folders that transformers loads with
the same numbers as nanoMolmo2, and stage 1 starts from them; the committed parts are complete and load."""

import json

import pytest
import torch
from safetensors.torch import load_file

from nanomolmo2.data.image_preprocessing import patchify
from nanomolmo2.models.language_model import LanguageModel
from nanomolmo2.models.vision_encoder import VisionEncoder
from nanomolmo2.pretrain.__main__ import main as make_pretrained
from nanomolmo2.pretrain.language import ROW_IDS, ROWS, expand_state
from nanomolmo2.pretrain.parts import COMPACT_WEIGHTS, LANGUAGE, PRETRAINED, VISION, pretrained_folders
from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.videos import write_shapesworld_videos
from nanomolmo2.training.config import ConfigError, load_config
from nanomolmo2.training.trainer import build_model


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A short `make pretrained` on a small training split, scored on a held-out one."""
    root = tmp_path_factory.mktemp("pretrain")
    for split, seed, images in (("train", 0, 400), ("eval", 1, 40)):
        write_shapesworld(root / split, images, seed=seed, image_size=112, num_text=40)
        write_shapesworld_videos(root / split, 8, seed=seed, image_size=112, max_seconds=2)
    make_pretrained(["--quick", "--train", str(root / "train"), "--held-out", str(root / "eval"),
                     "--out", str(root / "parts"), "--runs", str(root / "runs")])  # fmt: skip
    return root


def losses(path, key):
    return [r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r]


@pytest.mark.slow
def test_a_short_pretraining_learns_both_parts(made):
    sigmoid = losses(made / "runs" / VISION / "metrics.jsonl", "sigmoid_loss")
    grounding = losses(made / "runs" / VISION / "metrics.jsonl", "grounding_loss")
    assert sum(sigmoid[-5:]) < 0.7 * sum(sigmoid[:5]) and sum(grounding[-5:]) < 0.5 * sum(grounding[:5])
    text = losses(made / "runs" / LANGUAGE / "metrics.jsonl", "loss")
    assert sum(text[-5:]) < 0.5 * sum(text[:5])
    for part in (VISION, LANGUAGE):  # model cards with the recipe and the held-out scores
        card = (made / "parts" / part / "README.md").read_text()
        assert "## Recipe" in card and "## Held-out scores" in card and '"seed": 0' in card


@pytest.mark.slow
def test_transformers_reads_the_siglip_folder_as_nanomolmo2_does(made):
    from transformers import SiglipModel

    folder = made / "parts" / VISION
    reference = SiglipModel.from_pretrained(folder).eval()
    ours = VisionEncoder.from_pretrained(folder, feature_layers=(-1,)).eval()
    size = reference.config.vision_config.image_size
    pixels = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        # the last block's output: Molmo2 reads features from inside the tower, before SigLIP's post-LayerNorm
        theirs = reference.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        mine = ours(patchify(pixels.permute(0, 2, 3, 1), 14))
    assert (theirs - mine).abs().max() <= 1e-4
    vocabulary = json.loads((folder / "text_vocabulary.json").read_text())
    assert {"red", "circle", "left"} <= set(vocabulary)  # the text tower's words are kept with it


@pytest.mark.slow
def test_transformers_reads_the_qwen3_folder_as_nanomolmo2_does(made, tmp_path):
    from transformers import Qwen3ForCausalLM

    _, folder = pretrained_folders(tmp_path, source=made / "parts")
    reference = Qwen3ForCausalLM.from_pretrained(folder).eval()
    ours = LanguageModel.from_pretrained(folder).eval()
    kept = load_file(made / "parts" / LANGUAGE / COMPACT_WEIGHTS)[ROW_IDS]
    ids = kept[torch.randint(len(kept), (2, 24))]
    with torch.no_grad():
        theirs = reference(input_ids=ids).logits
        mine = ours(ids).logits
    assert (theirs - mine).abs().max() <= 1e-4


def test_compact_weights_keep_the_trained_rows_and_zero_the_rest():
    rows = torch.randn(3, 4)
    state = expand_state({ROW_IDS: torch.tensor([5, 0, 7]), ROWS: rows, "x": torch.ones(1)}, vocab_size=9)
    table = state["model.embed_tokens.weight"]
    assert table.shape == (9, 4) and torch.equal(table[[5, 0, 7]], rows)
    assert table[[1, 2, 3, 4, 6, 8]].abs().sum() == 0 and torch.equal(state["x"], torch.ones(1))


def test_the_full_qwen3_folder_is_written_once_and_again_when_the_parts_change(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with pytest.raises(FileNotFoundError, match="make pretrained"):
        pretrained_folders(tmp_path / "out", source=source)
    for part in (VISION, LANGUAGE):
        (source / part).symlink_to(PRETRAINED / part)
    vision, language = pretrained_folders(tmp_path / "out", source=source)
    assert vision == source / VISION and (language / "model.safetensors").is_file()
    written = (language / "model.safetensors").stat().st_mtime_ns
    assert pretrained_folders(tmp_path / "out", source=source)[1] == language
    assert (language / "model.safetensors").stat().st_mtime_ns == written  # not rewritten


def test_the_committed_parts_load_and_stage_1_starts_from_them(tmp_path):
    vision, language = pretrained_folders(tmp_path)
    config = load_config("tiny_stage1", {"vision_path": str(vision), "qwen3_path": str(language)})
    config.model.llm.output_token_ids = (0, 5, 9)
    model = build_model(config)
    assert model.config.llm.output_token_ids == (0, 5, 9)
    encoder = VisionEncoder.from_pretrained(vision, feature_layers=(-1,))
    for name, value in encoder.state_dict().items():
        assert torch.equal(model.vision.state_dict()[name], value), name
    llm = LanguageModel.from_pretrained(language)
    for name, value in llm.state_dict().items():  # all but the rows of Molmo2's own tokens (new in stage 1)
        assert name == "embed_tokens.new_weight" or torch.equal(model.llm.state_dict()[name], value), name
    # the architecture the demo's configs describe is the parts' own (a fresh stage 1 and the parts agree)
    assert model.config.vision.num_layers == config.model.vision.num_layers
    assert model.config.llm.hidden_size == config.model.llm.hidden_size
    for card in (vision / "README.md", PRETRAINED / LANGUAGE / "README.md"):
        assert "## Recipe" in card.read_text()


def test_pretrained_parts_need_a_qwen3_and_exactly_one_vision_source(tmp_path):
    for overrides in ({"vision_path": "a"}, {"vision_path": "a", "molmo2_path": "b", "qwen3_path": "c"}):
        with pytest.raises(ConfigError, match="qwen3_path goes with one of"):
            build_model(load_config("tiny_stage1", overrides))
