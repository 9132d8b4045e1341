"""Property tests (hypothesis) for nanomolmo2/data/processor.py: for any image size (1x1, 1x2000, 2000x1 and random
ones) and any small crop / margin / pooling layout, the prompt holds exactly one <im_patch> per pooled feature
the model computes from the pixels, every pooling window pools at least one real patch, and each patch of the
global crop and of the crop canvas is pooled exactly once. Videos likewise, per frame."""

import functools

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nanomolmo2.data.image_preprocessing import select_tiling
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.tokenizer import Tokenizer
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config
from nanomolmo2.tokens import (
    FRAME_START_ID,
    IMAGE_COL_ID,
    IMAGE_END_ID,
    IMAGE_PATCH_ID,
    IMAGE_START_ID,
    LOW_RES_IMAGE_START_ID,
    VISION_TOKEN_IDS,
)

EXTREME_SIZES = [(1, 1), (1, 2000), (2000, 1)]  # (width, height)


@functools.cache
def tokenizer():
    return Tokenizer()


@functools.cache
def tiny_model(crop_size: int) -> NanoMolmo2:
    """A tiny model whose encoder takes `crop_size` crops: it computes the pooled features the prompt must match."""
    config = NanoMolmo2Config.tiny()
    config.vision.image_size = crop_size
    torch.manual_seed(0)
    return NanoMolmo2(config).eval()


@st.composite
def layouts(draw):
    """Processor settings of a tiny encoder: crop side 2..6 patches of 14 px, margins that leave a window."""
    side = draw(st.integers(2, 6))
    left = draw(st.integers(0, (side - 1) // 2))
    right = draw(st.integers(0, side - 1 - left))
    pooling = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    return dict(crop_size=14 * side, max_crops=draw(st.integers(0, 9)), overlap_margins=(left, right),
                image_pooling=pooling, video_pooling=pooling)  # fmt: skip


def count(ids: torch.Tensor, token: int) -> int:
    return int((ids == token).sum())


def check_image_layout(processor: Processor, width: int, height: int) -> dict:
    """Process one blank image and check the token layout against the pixels and pooling windows."""
    out = processor("<|image|>Describe this image.", [PIL.Image.new("RGB", (width, height), (90, 30, 200))])
    ids, pooling = out["input_ids"][0], out["image_token_pooling"]
    low_h, low_w, high_h, high_w = out["image_grids"][0].tolist()
    side = processor.crop_size // processor.patch_size
    crops = int(out["image_num_crops"][0])

    # tokens: one <im_patch> per pooling window, the grid's structure tokens, one contiguous vision span
    assert count(ids, IMAGE_PATCH_ID) == pooling.shape[0] == low_h * low_w + high_h * high_w
    assert count(ids, IMAGE_COL_ID) == high_h and count(ids, LOW_RES_IMAGE_START_ID) == 1
    assert count(ids, IMAGE_START_ID) == int(high_h > 0) and count(ids, IMAGE_END_ID) == 1 + int(high_h > 0)
    vision = torch.isin(ids, torch.tensor(VISION_TOKEN_IDS)).nonzero().flatten()
    assert torch.equal(out["mm_token_type_ids"][0].nonzero().flatten(), vision)
    assert vision[-1] - vision[0] + 1 == len(vision)

    # pixels and pooling windows
    assert out["pixel_values"].shape == (crops, side * side, 3 * processor.patch_size**2)
    assert crops <= 1 + processor.max_crops
    assert pooling.min() >= -1 and pooling.max() < crops * side * side
    assert bool((pooling >= 0).any(dim=1).all())  # no window without a patch (the connector would drop it)
    used = pooling[pooling >= 0]
    assert len(used) == len(set(used.tolist()))  # no patch pooled twice
    assert sorted(used[used < side * side].tolist()) == list(range(side * side))  # the global crop, whole
    if processor.max_crops:
        left, right = processor.overlap_margins
        window, margin = side - left - right, (left + right) * processor.patch_size
        rows, cols = select_tiling(height - margin, width - margin, window * processor.patch_size, processor.max_crops)
        assert crops == 1 + rows * cols
        assert (used >= side * side).sum() == (rows * window + left + right) * (cols * window + left + right)
        assert set((used // (side * side)).tolist()) == set(range(crops))  # every crop is used
    else:
        assert high_h == 0 and crops == 1
    return out


def check_model_consumes(processor: Processor, out: dict) -> None:
    """The tiny model turns the pixels into exactly one feature per <im_patch> of the prompt."""
    model = tiny_model(processor.crop_size)
    with torch.no_grad():
        features = model.vision_tokens(out["pixel_values"], out["image_token_pooling"])
        embeds = model.embed(out["input_ids"], out["pixel_values"], out["image_token_pooling"])  # raises on a mismatch
    assert features.shape[0] == count(out["input_ids"], IMAGE_PATCH_ID)
    assert embeds.shape[:2] == out["input_ids"].shape and bool(torch.isfinite(embeds).all())


@settings(max_examples=40, deadline=None)
@given(layouts(), st.integers(1, 2000), st.integers(1, 2000))
@example(dict(crop_size=56, max_crops=8, overlap_margins=(1, 1), image_pooling=(2, 2), video_pooling=(3, 3)), 1, 2000)
@example(dict(crop_size=56, max_crops=8, overlap_margins=(1, 1), image_pooling=(2, 2), video_pooling=(3, 3)), 2000, 1)
@example(dict(crop_size=56, max_crops=8, overlap_margins=(1, 1), image_pooling=(2, 2), video_pooling=(3, 3)), 1, 1)
@example(dict(crop_size=84, max_crops=9, overlap_margins=(2, 2), image_pooling=(3, 3), video_pooling=(3, 3)), 1, 2000)
def test_image_tokens_match_the_features_the_model_computes(layout, width, height):
    processor = Processor(tokenizer(), **layout)
    check_model_consumes(processor, check_image_layout(processor, width, height))


@pytest.mark.parametrize("width, height", EXTREME_SIZES)
def test_molmo2_layout_on_extreme_sizes(width, height):
    """The released 378-px layout (8 crops, 4-patch margins, 2x2 pooling) on a pixel and on 1-pixel lines."""
    processor = Processor(tokenizer())
    check_model_consumes(processor, check_image_layout(processor, width, height))


@settings(max_examples=20, deadline=None)
@given(layouts(), st.integers(1, 6), st.integers(1, 300), st.integers(1, 300), st.integers(0, 255))
@example(
    dict(crop_size=56, max_crops=0, overlap_margins=(0, 0), image_pooling=(3, 3), video_pooling=(3, 3)), 1, 1, 1, 0
)
def test_video_tokens_match_the_features_the_model_computes(layout, frames, width, height, value):
    processor = Processor(tokenizer(), **layout)
    video = np.full((frames, height, width, 3), value, dtype=np.uint8)
    times = [0.5 * t for t in range(frames)]
    out = processor("<|video|>What happens?", videos=[(video, times)])
    ids, pooling = out["input_ids"][0], out["video_token_pooling"]
    t, rows, cols = out["video_grids"][0].tolist()
    side = processor.crop_size // processor.patch_size
    assert t == frames and count(ids, FRAME_START_ID) == frames
    assert count(ids, IMAGE_PATCH_ID) == pooling.shape[0] == frames * rows * cols
    assert out["pixel_values_videos"].shape[:2] == (frames, side * side)
    assert bool((pooling >= 0).any(dim=1).all())
    used = pooling[pooling >= 0]
    assert sorted(used.tolist()) == list(range(frames * side * side))  # every patch of every frame, once
    model = tiny_model(processor.crop_size)
    with torch.no_grad():
        embeds = model.embed(ids[None], pixel_values_videos=out["pixel_values_videos"], video_token_pooling=pooling)
    assert embeds.shape[1] == len(ids)
