"""A saved folder (nanomolmo2/formats/molmo2_folder.py) is a complete Molmo2 checkpoint: nanoMolmo2 reads back every
option, and transformers 5.24 (in .venv-ref) loads it with nothing added, builds our prompt with its own chat template
and processor, and generates the same greedy tokens on a real photo."""

import json
import warnings

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as RustTokenizer

from nanomolmo2.data.chat import prompt
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.tokenizer import Tokenizer, checkpoint_tokenizer
from nanomolmo2.eval.generation import Request, generate_answers, model_inputs
from nanomolmo2.eval.loading import open_model
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config
from nanomolmo2.tokens import BOS_TOKEN, IM_END_ID
from tests.data.media import real_photos
from tests.models.reference import randomize
from tests.reference_env import run_reference

FILES = {
    "config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "chat_template.jinja", "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
}  # fmt: skip
QUESTION, NEW_TOKENS = "What is in this picture?", 12


def realistic_config() -> NanoMolmo2Config:
    """Small and random, laid out as Molmo2: 112-px crops (8x8 patches of 14 px), a global crop and up to 4
    overlapping crops, 2x2 pooling for images and 3x3 for video frames, the full 151,936-token head."""
    config = NanoMolmo2Config.tiny()
    config.vision.image_size, config.vision.max_crops, config.vision.overlap_margins = 112, 4, (2, 2)
    return config


def demo_config() -> NanoMolmo2Config:
    """The CPU demo's options that Molmo2 lacks: a restricted output vocabulary, the global crop only, 1x1 pooling,
    one feature layer."""
    config = NanoMolmo2Config.tiny()
    config.llm.output_token_ids = tuple(sorted(set(Tokenizer().encode(" the cat sat on a mat"))))
    config.vision.image_size, config.vision.max_crops, config.vision.feature_layers = 112, 0, (-1,)
    config.connector.image_pooling, config.connector.video_pooling = (1, 1), (2, 2)
    return config


def test_a_saved_folder_holds_every_file_and_our_settings(tmp_path):
    NanoMolmo2(realistic_config()).save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == FILES
    read = {name: json.loads((tmp_path / name).read_text()) for name in FILES if name.endswith("_config.json")}
    image, video = read["preprocessor_config.json"], read["video_preprocessor_config.json"]
    assert (image["size"], image["max_crops"], image["overlap_margins"], image["pooling_size"]) == (
        {"height": 112, "width": 112},
        4,
        [2, 2],
        [2, 2],
    )
    assert (video["size"]["height"], video["pooling_size"]) == (112, [3, 3])
    assert image["image_mean"] == video["image_std"] == [0.5, 0.5, 0.5]
    assert read["processor_config.json"]["use_single_crop_col_tokens"] is False
    assert read["generation_config.json"]["eos_token_id"] == IM_END_ID
    tokenizer_config = read["tokenizer_config.json"]
    assert (tokenizer_config["eos_token"], tokenizer_config["bos_token"]) == ("<|im_end|>", "<|im_end|>")
    shipped, bundled = Tokenizer(tmp_path), Tokenizer()
    assert shipped.to_json() == bundled.to_json() and shipped.token_to_id("<|video|>") == 151945


def test_the_demo_options_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomize(NanoMolmo2(demo_config())).eval()
    model.save_pretrained(tmp_path)
    again = NanoMolmo2.from_pretrained(tmp_path).eval()
    for config in (model.config, again.config):  # (a tied head comes back untied, the ViT as deep as it is built)
        assert config.llm.output_token_ids == demo_config().llm.output_token_ids
        assert (config.vision.max_crops, config.vision.resolved_feature_layers) == (0, [3])
        assert (config.connector.image_pooling, config.connector.video_pooling) == ((1, 1), (2, 2))
    inputs = Processor.for_model(again.config)("<|image|>Describe this image.", [real_photos()["china"]])
    assert inputs["pixel_values"].shape[0] == 1 and inputs["image_token_pooling"].shape == (64, 1)  # 8x8 tokens
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)


def test_the_tokenizer_given_is_the_one_shipped(tmp_path):
    extended = RustTokenizer.from_str(Tokenizer().to_json())  # a copy: tokenizers are shared, never changed
    extended.add_tokens(["<|shape|>"])  # at 151946, after Molmo2's tokens
    (tmp_path / "source").mkdir()
    extended.save(str(tmp_path / "source" / "tokenizer.json"))
    custom = Tokenizer(tmp_path / "source")
    NanoMolmo2(NanoMolmo2Config.tiny()).save_pretrained(tmp_path, tokenizer=custom.to_json())
    assert checkpoint_tokenizer(tmp_path).token_to_id("<|shape|>") == 151946
    assert open_model(tmp_path, "fp32", "cpu")[1].tokenizer.token_to_id("<|shape|>") == 151946  # chat, serve, eval
    (tmp_path / "empty").mkdir()  # no tokenizer.json: the next checkpoint's, or the bundled one
    assert checkpoint_tokenizer(None, "", tmp_path / "empty", tmp_path).token_to_id("<|shape|>") == 151946
    assert checkpoint_tokenizer(None, "", tmp_path / "empty").token_to_id("<|shape|>") is None


def test_without_the_bundled_tokenizer_a_folder_is_still_written(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NanoMolmo2(NanoMolmo2Config.tiny()).save_pretrained(tmp_path)
    assert any("no tokenizer files" in str(w.message) for w in caught)
    assert {p.name for p in tmp_path.iterdir()} == FILES - {
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    }


# ---------------------------------------------------------------- transformers serves the folder


def conversations() -> dict:
    image, text = {"type": "image"}, lambda t: {"type": "text", "text": t}
    return {
        "one_image": [{"role": "user", "content": [image, text(QUESTION)]}],
        "two_images_two_turns": [
            {"role": "user", "content": [image, image, text("Which one is a temple?")]},
            {"role": "assistant", "content": [text("The first one.")]},
            {"role": "user", "content": "And the second?"},
        ],
        "video": [{"role": "user", "content": [{"type": "video"}, text("What happens?")]}],
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    torch.manual_seed(0)
    randomize(NanoMolmo2(realistic_config())).save_pretrained(folder / "final")
    NanoMolmo2(demo_config()).save_pretrained(folder / "demo")
    case = {
        "folder": str(folder / "final"),
        "photo": str(real_photos()["china"]),
        "question": QUESTION,
        "max_new_tokens": NEW_TOKENS,
        "load_only": [str(folder / "demo")],
        "conversations": conversations(),
    }
    (folder / "case.json").write_text(json.dumps(case))
    run_reference("molmo2_serving.py", folder / "case.json", folder / "out.pt")
    return case, torch.load(folder / "out.pt")


@pytest.mark.slow
def test_transformers_loads_the_folder_as_we_configured_it(served):
    case, got = served
    settings = got["settings"]
    assert got["model_class"] == "Molmo2ForConditionalGeneration"
    assert settings["classes"] == ["Molmo2Processor", "Molmo2ImageProcessor", "Molmo2VideoProcessor"]
    assert settings["layout"] == [True, False, True, False, True]  # our token layout (data/processor.py)
    assert settings["image"] == [112, 14, 4, [2, 2], [2, 2], [0.5] * 3, [0.5] * 3, True]
    assert settings["video"] == [112, 14, [3, 3], True]
    assert settings["tokens"] == ["<|im_end|>", "<|im_end|>", "<|endoftext|>", 151938] and settings["chat_template"]
    assert got["generation"] == [151645, 151643] and got["specials_skipped"] == ""
    demo_settings, demo_class = got["load_only"][case["load_only"][0]]
    assert demo_class == "Molmo2ForConditionalGeneration" and demo_settings["image"][2:5] == [0, [4, 4], [1, 1]]


@pytest.mark.slow
def test_transformers_prompt_and_greedy_tokens_equal_ours(served):
    """The photo and question through transformers' chat template, processor and generate, against nanoMolmo2's
    prompt and generate_answers on the same folder."""
    case, got = served
    model, processor = open_model(case["folder"], "fp32", "cpu")
    vision = [processor.preprocess(case["photo"])]
    ids = torch.tensor([prompt(processor, vision, QUESTION)])
    assert torch.equal(got["input_ids"], ids)
    assert torch.equal(got["pixel_values"], vision[0].pixel_values.to(got["pixel_values"].dtype))
    assert torch.equal(got["image_token_pooling"], vision[0].token_pooling.to(got["image_token_pooling"].dtype))

    inputs = model_inputs([ids[0]], vision, "cpu")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
        blank = model(**{**inputs, "pixel_values": torch.zeros_like(inputs["pixel_values"])}).logits[0, -1]
    assert (logits - got["first_logits"]).abs().max() <= 1e-4 < (logits - blank).abs().max()  # the photo counts
    theirs = got["new_tokens"].tolist()
    ours = model.generate(**inputs, max_new_tokens=NEW_TOKENS)[0].tolist()
    ours = ours[: ours.index(IM_END_ID) + 1] if IM_END_ID in ours else ours
    assert ours == theirs and len(ours) > 1
    answer = generate_answers(model, processor, [Request(QUESTION, [case["photo"]], max_new_tokens=NEW_TOKENS)])[0]
    assert answer == got["text"].split("<|im_end|>")[0].strip() and answer


@pytest.mark.slow
def test_the_chat_template_lays_out_conversations_as_training_does(served):
    """transformers' rendering of several conversations (two images, a second turn, a video), with the media
    expanded and BOS in front as its processor does, is the token sequence data/chat.py builds."""
    _, got = served
    processor = Processor.for_model(realistic_config())
    images = [processor.preprocess(real_photos()[name]) for name in ("china", "flower")]
    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    video = processor.preprocess_video(frames, [0.0, 0.5, 1.0])
    expected = {
        "one_image": prompt(processor, images[:1], QUESTION),
        "two_images_two_turns": prompt(
            processor, images, "And the second?", history=[("Which one is a temple?", "The first one.")]
        ),
        "video": prompt(processor, [video], "What happens?"),
    }
    for name, text in got["templates"].items():
        for image in images if name == "two_images_two_turns" else images[:1]:
            text = text.replace("<|image|>", processor.image_string(image.grid), 1)
        text = text.replace("<|video|>", processor.video_string(video))
        assert processor.tokenizer.encode(BOS_TOKEN + text) == expected[name], name
