"""Builders shared by the model tests: tiny random transformers references and processor-like inputs.

Inputs are laid out exactly as transformers' Molmo2Processor lays them out (docs/MOLMO2.md, Token layout): a BOS,
the low-res crop `<low_res_im_start> <im_patch>*h0*w0 <im_end>`, the high-res crops
`<im_start> (<im_patch>*w <im_col>)*h <im_end>`, then text; video frames `<frame_start> <im_patch>* <frame_end>`.
"""

from __future__ import annotations

import torch
from transformers import Molmo2Config
from transformers.models.molmo2.image_processing_molmo2 import arange_for_pooling

BOS, IM_START, IM_END, IM_PATCH, IM_COL, LOW_RES_START = 151645, 151936, 151937, 151938, 151939, 151940
FRAME_START, FRAME_END = 151943, 151944
VISION_TOKEN_IDS = (IM_START, IM_END, IM_PATCH, IM_COL, LOW_RES_START, FRAME_START, FRAME_END, 151942)


def tiny_molmo2_config(image_size: int = 42, vision_layers: int = 4, feature_layers=(-1, -3), **text) -> Molmo2Config:
    """A random-weight Molmo2 small enough for CPU tests; 42 px = 3x3 patches, so 2x2 pooling needs -1 padding."""
    text_config = dict(
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,  # != hidden / heads
        vocab_size=151936,
        additional_vocab_size=128,
        num_hidden_layers=2,
        intermediate_size=64,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
    )
    text_config.update(text)
    return Molmo2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=8,
            image_size=[image_size, image_size],
            patch_size=14,
        ),
        adapter_config=dict(
            vision_feature_layer=list(feature_layers),
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=8,
            intermediate_size=40,
            text_hidden_size=text_config["hidden_size"],
        ),
        text_config=text_config,
        initializer_range=0.1,  # larger than usual so that logits are well separated (stable greedy argmax)
    )


def _vision_type_ids(ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(VISION_TOKEN_IDS)).long()


def image_inputs(config: Molmo2Config, tiling=(1, 2), text_len: int = 12, seed: int = 0) -> dict:
    """Processor-like inputs for one image: a global crop plus rows x cols high-res crops, then `text_len` text ids."""
    g = torch.Generator().manual_seed(seed)
    side = config.vision_config.image_size[0] // config.vision_config.patch_size
    patches = side * side
    rows, cols = tiling
    num_crops = 1 + rows * cols
    pixel_values = torch.rand(num_crops, patches, 14 * 14 * 3, generator=g) * 2 - 1
    low_idx, h0, w0 = arange_for_pooling(torch.arange(patches).reshape(side, side), 2, 2)
    # High-res grid: crop (r, c) occupies block (r, c) of a [rows*side, cols*side] patch grid.
    crop_ids = torch.arange(1, num_crops).reshape(rows, cols)
    grid = (crop_ids[:, None, :, None] * patches + torch.arange(patches).reshape(side, 1, side)[None, :, None]).reshape(
        rows * side, cols * side
    )
    high_idx, h, w = arange_for_pooling(grid, 2, 2)
    vision = (
        [LOW_RES_START] + [IM_PATCH] * (h0 * w0) + [IM_END] + [IM_START] + ([IM_PATCH] * w + [IM_COL]) * h + [IM_END]
    )
    text = torch.randint(100, 5000, (text_len,), generator=g).tolist()
    input_ids = torch.tensor([[BOS] + vision + text])
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": _vision_type_ids(input_ids),
        "pixel_values": pixel_values,
        "image_token_pooling": torch.cat([low_idx, high_idx]),
        "image_grids": torch.tensor([[h0, w0, h, w]]),
        "image_num_crops": torch.tensor([num_crops]),
    }


def video_inputs(config: Molmo2Config, num_frames: int = 3, text_len: int = 10, seed: int = 0) -> dict:
    """Processor-like inputs for one video: per frame `<time> <frame_start> <im_patch>* <frame_end>`, 3x3 pooling."""
    g = torch.Generator().manual_seed(seed)
    side = config.vision_config.image_size[0] // config.vision_config.patch_size
    patches = side * side
    pixel_values = torch.rand(num_frames, patches, 14 * 14 * 3, generator=g) * 2 - 1
    pooling, rows, cols = [], 0, 0
    ids = [BOS]
    for t in range(num_frames):
        idx, rows, cols = arange_for_pooling(torch.arange(patches).reshape(side, side) + t * patches, 3, 3)
        pooling.append(idx)
        ids += torch.randint(100, 5000, (3,), generator=g).tolist()  # the "0.5 " timestamp text
        ids += [FRAME_START] + [IM_PATCH] * (rows * cols) + [FRAME_END]
    ids += torch.randint(100, 5000, (text_len,), generator=g).tolist()
    input_ids = torch.tensor([ids])
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": _vision_type_ids(input_ids),
        "pixel_values_videos": pixel_values,
        "video_token_pooling": torch.cat(pooling),
        "video_grids": torch.tensor([[num_frames, rows, cols]]),
    }


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter O(1)-scale random values (norm gains near 1), so that every path, the
    vision tokens included, changes the logits visibly; transformers' own init leaves the vision path tiny."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.dim() == 2 and "embed" not in name:
            p.copy_(noise / p.shape[1] ** 0.5)  # ~unit-variance outputs for unit-variance inputs
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * noise)
        else:
            p.copy_(0.5 * noise)  # biases, embeddings, position / class embeddings
    return model


def batch_inputs(examples: list[dict]) -> dict:
    """Stack same-length single-example inputs into a batch; pooling indices shift by the crops before them."""
    batch = {k: torch.cat([e[k] for e in examples]) for k in examples[0] if not k.endswith("pooling")}
    for key, pixels in (("image_token_pooling", "pixel_values"), ("video_token_pooling", "pixel_values_videos")):
        if key in examples[0]:
            offsets, pooled = 0, []
            for e in examples:
                pooled.append(torch.where(e[key] >= 0, e[key] + offsets, -1))
                offsets += e[pixels].shape[0] * e[pixels].shape[1]
            batch[key] = torch.cat(pooled)
    return batch
