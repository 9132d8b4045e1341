"""NanoMolmo2 against transformers' Molmo2ForConditionalGeneration: loading, logits, loss, generation, saving."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Molmo2ForConditionalGeneration

from nanomolmo2.formats.weights import CheckpointError
from nanomolmo2.models import NanoMolmo2

from .reference import batch_inputs, image_inputs, randomize, tiny_molmo2_config, video_inputs

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random tiny Molmo2 saved by transformers, and ours loaded from the same folder."""
    torch.manual_seed(0)
    hf = randomize(Molmo2ForConditionalGeneration(tiny_molmo2_config())).eval()
    folder = tmp_path_factory.mktemp("molmo2")
    hf.save_pretrained(folder)
    ours = NanoMolmo2.from_pretrained(folder).eval()
    return hf, ours, folder


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("make_inputs", [image_inputs, video_inputs], ids=["image", "video"])
def test_logits_match_transformers(reference, make_inputs):
    hf, ours, _ = reference
    inputs = make_inputs(hf.config)
    with torch.no_grad():
        expected = hf(**inputs).logits
        got = ours(**inputs).logits
    assert got.shape == expected.shape == (1, inputs["input_ids"].shape[1], 151936)
    assert _max_diff(got, expected) <= TOL


def test_vision_tokens_change_the_output(reference):
    """The parity above must not pass because the image is ignored: other pixels, other logits."""
    hf, ours, _ = reference
    inputs = image_inputs(hf.config)
    other = dict(inputs, pixel_values=torch.zeros_like(inputs["pixel_values"]))
    with torch.no_grad():
        assert _max_diff(ours(**inputs).logits, ours(**other).logits) > 1e-3


def test_bidirectional_vision_block(reference):
    """With mm_token_type_ids, the first vision token sees later ones; without, it does not."""
    hf, ours, _ = reference
    inputs = image_inputs(hf.config)
    causal = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        bidir_logits = ours(**inputs).logits
        causal_logits = ours(**causal).logits
        hf_causal = hf(**causal).logits
    assert _max_diff(causal_logits, hf_causal) <= TOL
    assert _max_diff(bidir_logits[:, 2], causal_logits[:, 2]) > 1e-4  # a vision token: differs
    assert _max_diff(bidir_logits[:, 0], causal_logits[:, 0]) == 0  # BOS precedes the block: unchanged


def test_loss_matches_transformers(reference):
    hf, ours, _ = reference
    inputs = image_inputs(hf.config)
    labels = inputs["input_ids"].clone()
    labels[:, :-6] = -100  # loss on the answer only
    with torch.no_grad():
        expected = hf(**inputs, labels=labels)
        got = ours(**inputs, labels=labels)
    keep = labels[:, 1:] != -100
    assert got.logits.shape == (int(keep.sum()), 151936)  # logits only where the loss is
    assert _max_diff(got.logits, expected.logits[:, :-1][keep]) <= TOL
    assert abs(got.loss.item() - expected.loss.item()) <= TOL


def test_greedy_generation_matches_transformers(reference):
    hf, ours, _ = reference
    inputs = image_inputs(hf.config, seed=3)
    prompt_len = inputs["input_ids"].shape[1]
    expected = hf.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(**inputs, max_new_tokens=16, eos_token_id=-1)
    assert got.tolist() == expected[:, prompt_len:].tolist()


def test_batched_generation_with_left_padding(reference):
    """Two prompts of different lengths, left-padded, give the same tokens as each prompt alone."""
    _, ours, _ = reference
    a = torch.tensor([[151645, 300, 301, 302, 303, 304]])
    b = torch.tensor([[151645, 400, 401]])
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    together = ours.generate(batch, attention_mask=mask, max_new_tokens=8, eos_token_id=-1)
    assert together[0].tolist() == ours.generate(a, max_new_tokens=8, eos_token_id=-1)[0].tolist()
    assert together[1].tolist() == ours.generate(b, max_new_tokens=8, eos_token_id=-1)[0].tolist()


def test_save_pretrained_loads_in_transformers(reference, tmp_path):
    hf, ours, _ = reference
    ours.save_pretrained(tmp_path / "ours")
    state = load_file(tmp_path / "ours" / "model.safetensors")
    # The released split: 151,936 base rows + 128 Molmo2 rows.
    assert state["model.transformer.wte.embedding"].shape[0] == 151936
    assert state["model.transformer.wte.new_embedding"].shape[0] == 128
    reloaded = Molmo2ForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    for make_inputs in (image_inputs, video_inputs):
        inputs = make_inputs(hf.config, seed=5)
        with torch.no_grad():
            assert _max_diff(reloaded(**inputs).logits, hf(**inputs).logits) <= TOL


def test_round_trip_ours_to_ours(reference, tmp_path):
    hf, ours, _ = reference
    ours.save_pretrained(tmp_path / "again")
    again = NanoMolmo2.from_pretrained(tmp_path / "again").eval()
    inputs = video_inputs(hf.config, seed=7)
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, ours(**inputs).logits)


def test_reads_released_layout(reference, tmp_path):
    """The released allenai/Molmo2-* config (vit_config, vit_layers, 27-layer ViT) and its 151,936/128 split."""
    hf, ours, folder = reference
    cfg = json.loads((folder / "config.json").read_text())
    vision = cfg.pop("vision_config")
    vision["image_default_input_size"] = vision.pop("image_size")
    vision["image_patch_size"] = vision.pop("patch_size")
    vision["num_hidden_layers"] = 6  # declared deeper than the file holds, as in the released config
    cfg["vit_config"] = vision
    adapter = cfg["adapter_config"]
    adapter["vit_layers"] = [-3, -5]  # = blocks 3 and 1 of 6: what the tiny model reads
    del adapter["vision_feature_layer"]
    text = cfg["text_config"]
    text["rope_theta"] = text.pop("rope_parameters")["rope_theta"]
    text["layer_norm_eps"] = text.pop("rms_norm_eps")
    ours.save_pretrained(tmp_path / "released")
    (tmp_path / "released" / "config.json").write_text(json.dumps(cfg))
    released = NanoMolmo2.from_pretrained(tmp_path / "released").eval()
    assert released.config.vision.resolved_feature_layers == [3, 1]
    inputs = image_inputs(hf.config)
    with torch.no_grad():
        assert _max_diff(released(**inputs).logits, hf(**inputs).logits) <= TOL


def test_bad_keys_fail_with_one_error_listing_them(reference, tmp_path):
    _, ours, _ = reference
    ours.save_pretrained(tmp_path / "bad")
    path = tmp_path / "bad" / "model.safetensors"
    state = load_file(path)
    del state["model.transformer.blocks.1.mlp.ff_out.weight"]
    state["model.transformer.blocks.0.typo.weight"] = torch.zeros(3)
    state["model.transformer.ln_f.weight"] = torch.zeros(7)
    save_file(state, path)
    with pytest.raises(CheckpointError) as err:
        NanoMolmo2.from_pretrained(tmp_path / "bad")
    message = str(err.value)
    assert "llm.layers.1.mlp.down_proj.weight" in message  # missing
    assert "model.transformer.blocks.0.typo.weight" in message  # unexpected
    assert "llm.norm.weight: checkpoint (7,) vs model (48,)" in message  # mis-shaped


def test_truncated_weights_file_is_reported(reference, tmp_path):
    _, ours, _ = reference
    ours.save_pretrained(tmp_path / "cut")
    path = tmp_path / "cut" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        NanoMolmo2.from_pretrained(tmp_path / "cut")


def test_batch_of_two_images_matches_transformers(reference):
    hf, ours, _ = reference
    inputs = batch_inputs([image_inputs(hf.config, seed=1), image_inputs(hf.config, seed=2)])
    with torch.no_grad():
        expected, got = hf(**inputs).logits, ours(**inputs).logits
    assert got.shape[0] == 2 and _max_diff(got, expected) <= TOL


def test_sampling_is_seeded_and_top_p_narrows_to_greedy(reference):
    _, ours, _ = reference
    ids = torch.tensor([[151645, 300, 301, 302]])

    def sample(seed, **kw):
        return ours.generate(
            ids, max_new_tokens=6, eos_token_id=-1, generator=torch.Generator().manual_seed(seed), **kw
        )

    assert torch.equal(sample(0, temperature=1.0), sample(0, temperature=1.0))
    assert not torch.equal(sample(0, temperature=5.0), sample(1, temperature=5.0))
    # A nucleus this small holds only the most likely token: sampling becomes greedy.
    assert torch.equal(sample(2, temperature=1.0, top_p=1e-6), ours.generate(ids, max_new_tokens=6, eos_token_id=-1))
