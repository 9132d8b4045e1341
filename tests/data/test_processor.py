"""Processor outputs against transformers' Molmo2Processor (run in .venv-ref), on real photos and odd images."""

import json
import re

import PIL.Image
import pytest
import torch

from nanomolmo2.data.image_preprocessing import load_image, pooling_windows
from nanomolmo2.data.processor import Processor
from tests.reference_env import run_reference

from .media import odd_images, real_photos

PROMPT = "<|im_start|>user\n<|image|>Describe this image.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """All cases, with transformers' outputs computed once in the reference environment."""
    folder = tmp_path_factory.mktemp("media")
    images = {**real_photos(), **odd_images(folder)}
    cases = [{"name": name, "text": PROMPT, "images": [str(path)]} for name, path in images.items()]
    cases += [
        {"name": "china_24_crops", "text": PROMPT, "images": [str(images["china"])], "max_crops": 24},
        {"name": "wide_24_crops", "text": PROMPT, "images": [str(images["wide_5000x40.png"])], "max_crops": 24},
        {
            "name": "two_images",
            "text": "Image 1<|image|>Image 2<|image|>Which one is a cat?",
            "images": [str(images["chelsea"]), str(images["rgba.png"])],
        },
        {"name": "text_only", "text": "Just text, 12345 \u4f60\u597d", "images": []},
        # A small encoder (112 px, 8x8 patches) with 2-patch margins, as a tiny model would use.
        {"name": "small_crops", "text": PROMPT, "images": [str(images["flower"])], "size": 112, "overlap": [2, 2]},
    ]
    (folder / "cases.json").write_text(json.dumps(cases))
    run_reference("molmo2_processor.py", folder / "cases.json", folder / "reference.pt")
    return cases, torch.load(folder / "reference.pt")


@pytest.fixture(scope="module")
def processor():
    return Processor()


def test_outputs_equal_transformers(cases, processor):
    cases, reference = cases
    for case in cases:
        ours_processor = processor
        if "size" in case:
            ours_processor = Processor(processor.tokenizer, crop_size=case["size"], overlap_margins=case["overlap"])
        got = ours_processor(case["text"], case["images"], max_crops=case.get("max_crops"))
        expected = reference[case["name"]]
        assert set(got) == set(expected), case["name"]
        for key, value in expected.items():
            assert got[key].shape == value.shape, (case["name"], key, got[key].shape, value.shape)
            assert torch.equal(got[key].to(value.dtype), value), (case["name"], key)


def test_token_counts_match_the_reference_table(processor):
    """docs/MOLMO2.md, Image tokens: 378x378 -> 410 tokens, 480x640 -> 752, 720p -> 1189."""
    for (h, w), expected in {(378, 378): 410, (480, 640): 752, (720, 1280): 1189}.items():
        image = PIL.Image.new("RGB", (w, h))
        tokens = processor.tokenizer.encode(processor.image_string(processor.preprocess(image).grid))
        assert len(tokens) == expected


def test_every_canvas_patch_pooled_once(processor):
    inputs = processor.preprocess(PIL.Image.new("RGB", (640, 480)))
    ids = inputs.token_pooling[inputs.token_pooling >= 0]
    assert len(ids) == len(set(ids.tolist()))  # no patch pooled twice
    # 480x640 is tiled 2x2: a canvas of 2*19+8 = 46 patches a side (19-patch windows + 4+4 margins),
    # and each of its patches appears exactly once although the four 27x27 crops overlap.
    assert inputs.pixel_values.shape[0] == 1 + 4
    assert len(ids[ids >= 729]) == 46 * 46


def test_pooling_windows_pad_symmetrically():
    windows, rows, cols = pooling_windows(torch.arange(9).reshape(3, 3), 2, 2)
    assert (rows, cols) == (2, 2)
    assert windows.tolist() == [[0, 1, 3, 4], [2, -1, 5, -1], [6, 7, -1, -1], [8, -1, -1, -1]]


def test_exif_orientation_is_applied(cases):
    cases, _ = cases
    path = next(c["images"][0] for c in cases if c["name"] == "exif_rotated.jpg")
    assert load_image(path).size == (60, 100)  # stored 100x60, displayed rotated


def test_marker_count_mismatch_is_an_error(processor):
    with pytest.raises(ValueError, match=re.escape("1 <|image|> markers but 2 media")):
        processor("<|image|>hi", [PIL.Image.new("RGB", (8, 8))] * 2)


def test_margins_that_leave_nothing_of_a_crop_are_a_clear_error():
    """A 42-px crop (3 patches) with Molmo2's default 4 + 4 patch margins cannot be tiled: a ValueError that says why,
    not `unfold`'s "step is -70" from inside a data worker."""
    image = PIL.Image.new("RGB", (300, 200))
    with pytest.raises(ValueError, match=r"overlap margins \(4, 4\) leave nothing of a 3-patch crop"):
        Processor(crop_size=42, patch_size=14, max_crops=8, overlap_margins=(4, 4)).preprocess(image)
    with pytest.raises(ValueError, match="must sum to less than 8 patches"):
        Processor(crop_size=112, patch_size=14, overlap_margins=(4, 4)).preprocess(image)  # 8 - 8 = 0 per step
    assert Processor(crop_size=42, patch_size=14, max_crops=0).preprocess(image).pixel_values.shape[0] == 1
    tiled = Processor(crop_size=126, patch_size=14, overlap_margins=(4, 4)).preprocess(image)
    assert tiled.pixel_values.shape[1:] == (81, 588)  # 9 patches: a 1-patch step still tiles
