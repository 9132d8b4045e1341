"""Pictures of points: predicted points drawn over an image (with its true objects outlined), grids, strips."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw

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
