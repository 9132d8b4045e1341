"""The processor: text with `<|image|>` / `<|video|>` markers + media -> the model's input tensors.

`Processor()(text, images=[...], videos=[(frames, times)])` returns the same keys and values as
transformers' `Molmo2Processor` configured like the released models: a BOS (`<|im_end|>` for Qwen) first,
then every `<|image|>` replaced by the image's vision tokens

    <low_res_im_start> (<im_patch> x W0) x H0 <im_end>  <im_start> ((<im_patch> x W) <im_col>) x H <im_end>

(no `<im_col>` in the low-res part) and every `<|video|>` by its frames, `"{t:.1f} "` before each

    0.0 <frame_start> (<im_patch> x 9) x 9 <frame_end> 0.5 <frame_start> ... <frame_end>

with `mm_token_type_ids` = 1 on every vision structure token, and the pixels / pooling windows of all
images concatenated (pooling indices shifted past earlier images' crops). The expanded text is tokenised
as one string, exactly as transformers does, so text next to a marker tokenises the same.
Crop size, patch size and pooling come from the vision config, so one code path serves the 378-px
Molmo2 encoder and the tiny CPU models. `uint8_pixels=True` (training) keeps the pixels as uint8, normalised
by the model on the device to the same floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..models.config import NanoMolmo2Config
from ..tokens import BOS_TOKEN, IMAGE_MARKER, VIDEO_MARKER, VISION_TOKEN_IDS
from .image_preprocessing import ImageInputs, VideoInputs, load_image, preprocess_image, preprocess_video
from .tokenizer import Tokenizer

ImageSource = str | Path | PIL.Image.Image | np.ndarray


class Processor:
    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        crop_size: int = 378,
        patch_size: int = 14,
        max_crops: int = 8,
        overlap_margins: tuple[int, int] = (4, 4),
        image_pooling: tuple[int, int] = (2, 2),
        video_pooling: tuple[int, int] = (3, 3),
        uint8_pixels: bool = False,
    ) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.crop_size, self.patch_size = crop_size, patch_size
        self.max_crops, self.overlap_margins = max_crops, tuple(overlap_margins)
        self.image_pooling, self.video_pooling = tuple(image_pooling), tuple(video_pooling)
        self.uint8_pixels = uint8_pixels

    @classmethod
    def for_model(cls, config: NanoMolmo2Config, tokenizer: Tokenizer | None = None, **overrides) -> Processor:
        """A processor matching a model's vision encoder (crop and patch size, crops) and connector (pooling)."""
        settings = dict(
            crop_size=config.vision.image_size,
            patch_size=config.vision.patch_size,
            max_crops=config.vision.max_crops,
            overlap_margins=config.vision.overlap_margins,
            image_pooling=config.connector.image_pooling,
            video_pooling=config.connector.video_pooling,
        )
        return cls(tokenizer, **{**settings, **overrides})

    # ------------------------------------------------------------ images

    def preprocess(self, image: ImageSource, max_crops: int | None = None) -> ImageInputs:
        if isinstance(image, str | Path):
            image = load_image(image)
        return preprocess_image(
            image,
            crop_size=self.crop_size,
            patch_size=self.patch_size,
            max_crops=self.max_crops if max_crops is None else max_crops,
            overlap_margins=self.overlap_margins,
            pooling=self.image_pooling,
            normalize=not self.uint8_pixels,
        )

    def preprocess_video(self, frames: np.ndarray, times: list[float]) -> VideoInputs:
        return preprocess_video(
            frames, times, self.crop_size, self.patch_size, self.video_pooling, normalize=not self.uint8_pixels
        )

    @staticmethod
    def image_string(grid: tuple[int, int, int, int]) -> str:
        """The vision tokens of one image with pooled grid (low-res rows, cols, high-res rows, cols)."""
        low_h, low_w, high_h, high_w = grid
        text = "<low_res_im_start>" + "<im_patch>" * (low_h * low_w) + "<im_end>"
        if high_h:
            text += "<im_start>" + ("<im_patch>" * high_w + "<im_col>") * high_h + "<im_end>"
        return text

    @staticmethod
    def video_string(video: VideoInputs) -> str:
        """Per frame: its time `"{t:.1f} "` (after a space from the second frame on), then its patch tokens."""
        _, rows, cols = video.grid
        frame = "<frame_start>" + "<im_patch>" * (rows * cols) + "<frame_end>"
        return " ".join(f"{t:.1f} {frame}" for t in video.times)

    # ------------------------------------------------------------ text + media

    def expand(self, text: str, images: list[ImageInputs], videos: list[VideoInputs]) -> str:
        """Replace the i-th `<|image|>` / `<|video|>` of `text` by the tokens of the i-th image / video."""
        text = replace_markers(text, IMAGE_MARKER, [self.image_string(image.grid) for image in images])
        return replace_markers(text, VIDEO_MARKER, [self.video_string(video) for video in videos])

    def __call__(
        self,
        text: str,
        images: list[ImageSource] | None = None,
        videos: list[tuple[np.ndarray, list[float]]] | None = None,
        max_crops: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """One example: `text` with one `<|image|>` per image and one `<|video|>` per (frames, times) video."""
        processed = [self.preprocess(image, max_crops) for image in images or []]
        clips = [self.preprocess_video(frames, times) for frames, times in videos or []]
        ids = self.tokenizer.encode(BOS_TOKEN + self.expand(text, processed, clips))
        input_ids = torch.tensor([ids])
        out = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": vision_token_mask(input_ids),
        }
        if processed:
            out["pixel_values"], out["image_token_pooling"] = merge_vision_inputs(processed)
            out["image_grids"] = torch.tensor([p.grid for p in processed])
            out["image_num_crops"] = torch.tensor([p.pixel_values.shape[0] for p in processed])
        if clips:
            out["pixel_values_videos"], out["video_token_pooling"] = merge_vision_inputs(clips)
            out["video_grids"] = torch.tensor([c.grid for c in clips])
        return out


def vision_token_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """`mm_token_type_ids`: 1 at every token of an image or frame block, 0 elsewhere (same shape as the ids)."""
    return torch.isin(input_ids, torch.tensor(VISION_TOKEN_IDS, device=input_ids.device)).long()


def replace_markers(text: str, marker: str, replacements: list[str]) -> str:
    pieces = text.split(marker)
    if len(pieces) - 1 != len(replacements):
        raise ValueError(f"text has {len(pieces) - 1} {marker} markers but {len(replacements)} media were given")
    return pieces[0] + "".join(r + p for r, p in zip(replacements, pieces[1:], strict=True))


def merge_vision_inputs(parts: list[ImageInputs | VideoInputs]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the crops of several images and shift each one's pooling indices past the crops before it.

    Windows of different sizes (2x2 images, 3x3 video frames) are padded with -1 to the widest.
    Returns pixel_values `[all crops, P, D]` and pooling `[all tokens, widest window]`.
    """
    width = max(p.token_pooling.shape[1] for p in parts)
    offset, pooled = 0, []
    for part in parts:
        windows = torch.where(part.token_pooling >= 0, part.token_pooling + offset, -1)
        pooled.append(torch.nn.functional.pad(windows, (0, width - windows.shape[1]), value=-1))
        offset += part.pixel_values.shape[0] * part.pixel_values.shape[1]
    return torch.cat([p.pixel_values for p in parts]), torch.cat(pooled)
