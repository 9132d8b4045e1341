"""Pictures of points: predicted points drawn over an image (with its true objects outlined), grids, strips, and
the points of an answer on the images or video frames it names."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw

from ..data.points import parse_points

OUTLINE = (255, 0, 255)


def overlay_masks(image: PIL.Image.Image, mask: np.ndarray | None, object_ids: list[int]) -> PIL.Image.Image:
    """Outline the true objects (the right answer) in magenta, so that hits and misses are visible while
    the objects keep their colours."""
    image = image.convert("RGB")
    if mask is None or not object_ids:
        return image
    pixels = np.asarray(image).copy()
    inside = np.isin(mask, object_ids)
    padded = np.pad(inside, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    pixels[inside & ~interior] = OUTLINE
    return PIL.Image.fromarray(pixels)


def draw_points(image: PIL.Image.Image, points: list[tuple[float, float]], scale: int = 1) -> PIL.Image.Image:
    """Crosses at pixel `points` (black outline, white core), on an image enlarged `scale` times."""
    image = image.convert("RGB")
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), PIL.Image.NEAREST)
    draw = PIL.ImageDraw.Draw(image)
    r = max(3, image.width // 40)
    for x, y in points:
        x, y = x * scale, y * scale
        for width, colour in ((5, (0, 0, 0)), (2, (255, 255, 255))):
            draw.line([(x - r, y - r), (x + r, y + r)], fill=colour, width=width)
            draw.line([(x - r, y + r), (x + r, y - r)], fill=colour, width=width)
    return image


def caption_under(image: PIL.Image.Image, text: str, height: int = 28) -> PIL.Image.Image:
    canvas = PIL.Image.new("RGB", (image.width, image.height + height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    PIL.ImageDraw.Draw(canvas).text((4, image.height + 4), text[: image.width // 6], fill=(0, 0, 0))
    return canvas


def text_block(lines: list[tuple[str, tuple[int, int, int]]], width: int, line_height: int = 12) -> PIL.Image.Image:
    """(text, colour) lines on white, each wrapped to `width` pixels (PIL's default font: ~6 px a character)."""
    chars = max(8, width // 6 - 1)
    wrapped = []
    for text, colour in lines:
        for start in range(0, max(len(text), 1), chars):
            wrapped.append((text[start : start + chars], colour))
    canvas = PIL.Image.new("RGB", (width, line_height * len(wrapped) + 6), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(canvas)
    for k, (text, colour) in enumerate(wrapped):
        draw.text((3, 3 + k * line_height), text, fill=colour)
    return canvas


def stack(tiles: list[PIL.Image.Image]) -> PIL.Image.Image:
    """Tiles one under the other, left-aligned, on white."""
    canvas = PIL.Image.new("RGB", (max(t.width for t in tiles), sum(t.height for t in tiles)), (255, 255, 255))
    y = 0
    for tile in tiles:
        canvas.paste(tile, (0, y))
        y += tile.height
    return canvas


def grid(tiles: list[PIL.Image.Image], columns: int, gap: int = 6) -> PIL.Image.Image:
    """Tiles of any sizes in rows of `columns`, on white."""
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    width = max(sum(t.width for t in row) + gap * (len(row) + 1) for row in rows)
    height = sum(max(t.height for t in row) + gap for row in rows) + gap
    canvas = PIL.Image.new("RGB", (width, height), (255, 255, 255))
    y = gap
    for row in rows:
        x = gap
        for tile in row:
            canvas.paste(tile, (x, y))
            x += tile.width + gap
        y += max(t.height for t in row) + gap
    return canvas


def points_picture(answer: str, image: PIL.Image.Image | None = None, video=None) -> PIL.Image.Image:
    """The answer's points on the image, or on the frames (a strip) at the times they name."""
    points = parse_points(answer)
    if image is not None:
        w, h = image.size
        return draw_points(image, [(x / 1000 * w, y / 1000 * h) for _, _, x, y in points], scale=max(1, 448 // w))
    frames, times = video
    h, w = frames.shape[1:3]
    tiles = []
    for frame, t in zip(frames, times, strict=True):
        here = [(x / 1000 * w, y / 1000 * h) for pt, _, x, y in points if round(pt, 1) == round(t, 1)]
        tiles.append(caption_under(draw_points(PIL.Image.fromarray(frame), here, scale=max(1, 224 // w)), f"{t:.1f}s"))
    return grid(tiles, columns=min(8, len(tiles)))


def answer_picture(
    answer: str, images: list[PIL.Image.Image], video: tuple[np.ndarray, list[float]] | None = None
) -> PIL.Image.Image | None:
    """The answer's points drawn, or None when it has none. Image points go on the image whose id they carry
    (1, 2, ...; all on the image when there is one), video points on the frames at their times (a strip)."""
    points = parse_points(answer)
    if not points:
        return None
    if not images:
        return points_picture(answer, video=video) if video is not None else None
    if len(images) == 1:
        return points_picture(answer, image=images[0])
    tiles = []
    for number, image in enumerate(images, start=1):
        w, h = image.size
        here = [(x / 1000 * w, y / 1000 * h) for t, _, x, y in points if round(t) == number]
        tiles.append(caption_under(draw_points(image, here, scale=max(1, 448 // w)), f"Image {number}"))
    return grid(tiles, columns=min(4, len(tiles)))
