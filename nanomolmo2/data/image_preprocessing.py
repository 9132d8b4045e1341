"""Molmo2's image preprocessing: crops, resizing, patches and pooling windows, in torch and PIL.

One image becomes
- a global crop: the whole image resized to `crop_size` x `crop_size`, and
- up to `max_crops` overlapping crops of a resized "canvas": the tiling (rows x cols) is the one needing
  the least up-scaling (or least down-scaling); neighbouring crops overlap by `overlap_margins` patches and
  the overlap is dropped from the pooling index so that every canvas patch is pooled exactly once.
Crops are cut into 14x14x3 patches `[crops, patches, 588]`; `token_pooling` `[tokens, ph*pw]` lists the
patch indices each vision token pools (-1 = padding). Numbers match transformers' Molmo2ImageProcessor
(bilinear, no antialias, resized in float then rounded and clamped to uint8, then x/255*2-1). With
`normalize=False` the pixels stop at uint8 (what training moves through shared memory and to the GPU, 4x less
than float32); the model then applies the same x/255*2-1 (`normalize_pixels`), to the same floats.

An image file is opened only if its header states at most MAX_IMAGE_PIXELS pixels (checked before anything is
decoded): a 12 KB PNG can claim 100 M pixels, which would cost gigabytes once decoded and converted to float.
Only the common photo formats are opened (IMAGE_FORMATS): Pillow would otherwise try each of its decoders on
untrusted bytes, EPS among them (which runs Ghostscript where it is installed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F

from ..models.vision_encoder import normalize_pixels

# 33.5 M pixels (8192 x 4096): larger images are refused before decoding. Pillow's own check only warns up to
# twice its limit (89 M pixels); this one is an error, and lower.
MAX_IMAGE_PIXELS = 1 << 25
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes phones' multi-picture (MPO) files
PIL.Image.init()  # registers Pillow's decoders, which it otherwise loads lazily: `formats=` only finds registered ones


class ImageTooLarge(ValueError):
    """An image whose header states more pixels than MAX_IMAGE_PIXELS (a decompression bomb or a huge scan)."""


@dataclass
class ImageInputs:
    pixel_values: torch.Tensor  # [crops, patches, patch*patch*3] float32 in [-1, 1], or uint8 (normalize=False)
    token_pooling: torch.Tensor  # [tokens, pool_h*pool_w] int64 patch indices into this image's crops, -1 = none
    grid: tuple[int, int, int, int]  # pooled (low-res rows, cols, high-res rows, cols)


def load_image(source: str | Path | PIL.Image.Image) -> PIL.Image.Image:
    """Open an image file (or take a PIL image) and apply its EXIF orientation, so pixels are upright.

    A file is checked against MAX_IMAGE_PIXELS from its header, before any pixel is decoded."""
    if isinstance(source, PIL.Image.Image):
        return PIL.ImageOps.exif_transpose(source)
    image = PIL.Image.open(source, formats=IMAGE_FORMATS)
    check_pixels(image.size, source)
    return PIL.ImageOps.exif_transpose(image)


def check_pixels(size: tuple[int, int], source: object = "image") -> None:
    """ImageTooLarge if a (width, height) has more than MAX_IMAGE_PIXELS pixels."""
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"{source}: {size[0]}x{size[1]} pixels, more than the limit of {MAX_IMAGE_PIXELS}")


def to_rgb(image: PIL.Image.Image | np.ndarray) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB; transparency is composited onto white (as transformers' convert_to_rgb)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        return np.ascontiguousarray(image[..., :3].astype(np.uint8))
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(PIL.Image.alpha_composite(background, rgba).convert("RGB"))
    return np.array(image.convert("RGB"))


def select_tiling(height: float, width: float, window: int, max_crops: int) -> tuple[int, int]:
    """(rows, cols), rows*cols <= max_crops, needing the least up-scaling of the image to cover it; if every
    tiling is smaller than the image, the one needing the least down-scaling. Ties: fewer crops, then fewer rows."""
    tilings = sorted(
        ((h, w) for h, w in itertools.product(range(1, max_crops + 1), repeat=2) if h * w <= max_crops),
        key=lambda t: (t[0] * t[1], t[0]),
    )
    sizes = torch.tensor(tilings, dtype=torch.int32).float() * window  # [n, 2] pixels covered by each tiling
    scale = (sizes / torch.tensor([height, width], dtype=torch.float32)).amin(dim=-1)  # [n]
    if bool((scale < 1).all()):
        return tilings[int(scale.argmax())]
    return tilings[int(torch.where(scale < 1.0, 10e9, scale).argmin())]


def resize_uint8(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 `[N, 3, H, W]` -> uint8 `[N, 3, height, width]` (bilinear, no antialias, in float, rounded). Resizing
    an image to its own size gives it back unchanged, so frames resized as they are decoded stay exact."""
    if image.shape[-2:] == (height, width):
        return image
    resized = F.interpolate(image.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def resize_normalized(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 `[N, 3, H, W]` -> float `[N, 3, height, width]` in [-1, 1] (bilinear, no antialias)."""
    return normalize_pixels(resize_uint8(image, height, width))


def pooling_windows(index_grid: torch.Tensor, pool_h: int, pool_w: int) -> tuple[torch.Tensor, int, int]:
    """Group a `[h, w]` grid of patch indices into `[rows*cols, pool_h*pool_w]` windows, padding the grid
    symmetrically with -1 up to a multiple of the window (extra padding goes bottom/right)."""
    pad_h = -index_grid.shape[0] % pool_h
    pad_w = -index_grid.shape[1] % pool_w
    grid = F.pad(index_grid, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=-1)
    rows, cols = grid.shape[0] // pool_h, grid.shape[1] // pool_w
    windows = grid.reshape(rows, pool_h, cols, pool_w).permute(0, 2, 1, 3).reshape(rows * cols, pool_h * pool_w)
    return windows, rows, cols


def patchify(crops: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[N, S, S, C]` -> `[N, (S/p)^2, p*p*C]`, patches in row-major order, pixels (row, col, channel)."""
    n, s, _, c = crops.shape
    side = s // patch_size
    patches = crops.reshape(n, side, patch_size, side, patch_size, c).transpose(2, 3)
    return patches.reshape(n, side * side, patch_size * patch_size * c)


def preprocess_image(
    image: PIL.Image.Image | np.ndarray,
    crop_size: int = 378,
    patch_size: int = 14,
    max_crops: int = 8,
    overlap_margins: tuple[int, int] = (4, 4),
    pooling: tuple[int, int] = (2, 2),
    normalize: bool = True,
) -> ImageInputs:
    """One image -> global crop + overlapping crops, as patches with their pooling windows.

    max_crops=0 keeps only the global crop (a cheaper layout for tiny models; not a Molmo2 layout).
    normalize=False: uint8 pixels (the model normalises them).
    """
    resize = resize_normalized if normalize else resize_uint8
    pixels = torch.from_numpy(to_rgb(image)).permute(2, 0, 1)[None]  # [1, 3, H, W] uint8
    height, width = pixels.shape[-2:]
    side = crop_size // patch_size
    patches_per_crop = side * side

    global_crop = resize(pixels, crop_size, crop_size).permute(0, 2, 3, 1)  # [1, S, S, 3]
    low_pooling, low_h, low_w = pooling_windows(torch.arange(patches_per_crop).reshape(side, side), *pooling)
    if max_crops == 0:
        return ImageInputs(patchify(global_crop, patch_size), low_pooling, (low_h, low_w, 0, 0))

    left, right = overlap_margins
    window_patches = side - left - right
    if window_patches <= 0:  # neighbouring crops would step by <= 0 patches: no tiling exists (unfold would fail)
        raise ValueError(
            f"overlap margins {tuple(overlap_margins)} leave nothing of a {side}-patch crop ({crop_size} px / "
            f"{patch_size} px): the margins must sum to less than {side} patches, or max_crops must be 0"
        )
    window = window_patches * patch_size
    margin = (left + right) * patch_size
    rows, cols = select_tiling(height - margin, width - margin, window, max_crops)
    canvas_h, canvas_w = rows * window + margin, cols * window + margin
    canvas = resize(pixels, canvas_h, canvas_w)  # [1, 3, canvas_h, canvas_w]
    crops = canvas.unfold(2, crop_size, window).unfold(3, crop_size, window)  # [1, 3, rows, cols, S, S]
    crops = crops.permute(0, 2, 3, 4, 5, 1).reshape(rows * cols, crop_size, crop_size, 3)

    # Patch ids of every crop, with the overlap margins shared with a neighbour blanked out (-1) so that
    # each canvas patch keeps exactly one id; what remains tiles the canvas patch grid row by row.
    ids = torch.arange(rows * cols * patches_per_crop).reshape(rows, cols, side, side)
    if left:
        ids[1:, :, :left, :] = -1
        ids[:, 1:, :, :left] = -1
    if right:
        ids[:-1, :, -right:, :] = -1
        ids[:, :-1, :, -right:] = -1
    ids = ids.permute(0, 2, 1, 3).reshape(-1)
    canvas_grid = ids[ids >= 0].reshape(canvas_h // patch_size, canvas_w // patch_size)
    high_pooling, high_h, high_w = pooling_windows(canvas_grid, *pooling)
    high_pooling = torch.where(high_pooling >= 0, high_pooling + patches_per_crop, -1)  # after the global crop

    all_crops = torch.cat([global_crop, crops])  # [1 + rows*cols, S, S, 3]
    return ImageInputs(
        pixel_values=patchify(all_crops, patch_size),
        token_pooling=torch.cat([low_pooling, high_pooling]),
        grid=(low_h, low_w, high_h, high_w),
    )


@dataclass
class VideoInputs:
    pixel_values: torch.Tensor  # [frames, patches, patch*patch*3] float32 (or uint8): each frame is one crop
    token_pooling: torch.Tensor  # [frames * tokens per frame, pool_h*pool_w] int64, -1 = none
    grid: tuple[int, int, int]  # (frames, pooled rows, pooled cols)
    times: list[float]  # seconds, one per frame


def preprocess_video(
    frames: np.ndarray,
    times: list[float],
    crop_size: int = 378,
    patch_size: int = 14,
    pooling: tuple[int, int] = (3, 3),
    normalize: bool = True,
) -> VideoInputs:
    """uint8 RGB frames `[T, H, W, 3]` -> each frame resized straight to one crop (no tiling), 3x3 pooling.
    normalize=False: uint8 pixels (the model normalises them)."""
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]
    resize = resize_normalized if normalize else resize_uint8
    crops = resize(pixels, crop_size, crop_size).permute(0, 2, 3, 1)  # [T, S, S, 3]
    side = crop_size // patch_size
    windows, rows, cols = pooling_windows(torch.arange(side * side).reshape(side, side), *pooling)
    offsets = (torch.arange(len(frames)) * side * side)[:, None, None]  # frame t's patches start at t*side^2
    pooled = torch.where(windows >= 0, windows + offsets, -1).reshape(-1, windows.shape[1])
    return VideoInputs(patchify(crops, patch_size), pooled, (len(frames), rows, cols), list(times))
