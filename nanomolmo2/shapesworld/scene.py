"""ShapesWorld scenes: coloured shapes that never overlap, on a light or textured background, with exact masks.

An image holds a few shapes (red circle, blue square, ...) on a light background ("easy") or a textured one
with distractors ("hard"). The image and its label-map mask are drawn with the same geometry, so a point is
right exactly when it lands in the object's mask. Objects are dicts
{"id", "label", "colour", "shape", "center": [x, y], "size", "position"}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .tasks import position_word

# clearly distinct, saturated colours that stand out on light backgrounds
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 0),
    "purple": (140, 40, 180),
    "orange": (250, 120, 0),
    "cyan": (0, 190, 210),
}


def ring(cx: float, cy: float, radii: list[float], n: int, start: float) -> list[tuple[float, float]]:
    """n vertices around (cx, cy) at angles start + 360 k / n degrees (y points down), cycling through radii."""
    angles = [math.radians(start + 360 * k / n) for k in range(n)]
    return [
        (cx + radii[k % len(radii)] * math.cos(a), cy + radii[k % len(radii)] * math.sin(a))
        for k, a in enumerate(angles)
    ]


def bar(cx: float, cy: float, half_w: float, half_h: float) -> list[tuple[float, float]]:
    return [
        (cx - half_w, cy - half_h),
        (cx + half_w, cy - half_h),
        (cx + half_w, cy + half_h),
        (cx - half_w, cy + half_h),
    ]


# shape -> polygons inside the circle of radius r around (cx, cy); each contains (cx, cy), so the point is in the mask
SHAPES = {
    "circle": lambda cx, cy, r: [ring(cx, cy, [r], 48, 0)],
    "square": lambda cx, cy, r: [ring(cx, cy, [r], 4, 45)],
    "triangle": lambda cx, cy, r: [ring(cx, cy, [r], 3, -90)],  # equilateral: its centroid is (cx, cy)
    "star": lambda cx, cy, r: [ring(cx, cy, [r, 0.45 * r], 10, -90)],
    "diamond": lambda cx, cy, r: [ring(cx, cy, [r, 0.6 * r], 4, -90)],
    "hexagon": lambda cx, cy, r: [ring(cx, cy, [r], 6, 0)],
    "cross": lambda cx, cy, r: [bar(cx, cy, 0.9 * r, 0.33 * r), bar(cx, cy, 0.33 * r, 0.9 * r)],
}


def draw_object(draw: ImageDraw.ImageDraw, obj: dict, fill: int | tuple) -> None:
    """Draw one object; the image and the mask call this with the same geometry, so they match pixel for pixel."""
    for polygon in SHAPES[obj["shape"]](*obj["center"], obj["size"]):
        draw.polygon(polygon, fill=fill)


# ---------------------------------------------------------------------------------------------------------------------
# backgrounds: (rng, size) -> float array [size, size, 3], light enough for every colour to stand out


def light(rng: np.random.Generator, low: float = 215) -> np.ndarray:
    return rng.uniform(low, 250) + rng.uniform(-8, 8, size=3)  # a light grey with a faint tint


def ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """Distance along a random direction, in image sides, [size, size]."""
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * math.pi)
    return x * math.cos(angle) + y * math.sin(angle)


def plain(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.broadcast_to(light(rng, 225), (size, size, 3))


def gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    t = ramp(rng, size)
    t = (t - t.min()) / (t.max() - t.min())
    a, b = light(rng, 175), light(rng, 175)
    return a + t[..., None] * (b - a)


def stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    band = (ramp(rng, size) / rng.uniform(0.04, 0.2)) % 1 < 0.5
    a = light(rng, 195)
    return np.where(band[..., None], a, a - rng.uniform(15, 35))


def blotches(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.broadcast_to(light(rng, 220), (size, size, 3)).copy()
    for _ in range(int(rng.integers(3, 8))):
        (bx, by), sigma = rng.uniform(0, 1, size=2), rng.uniform(0.05, 0.25)
        bump = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2))
        image += bump[..., None] * (rng.uniform(-35, 10) + rng.uniform(-8, 8, size=3))  # muted: no object colour
    return image


BACKGROUNDS = {"plain": plain, "gradient": gradient, "stripes": stripes, "blotches": blotches}


# ---------------------------------------------------------------------------------------------------------------------
# levels and scenes


@dataclass(frozen=True)
class Level:
    objects: tuple[int, int]  # fewest and most objects (fewer when they do not fit)
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    size: tuple[float, float]  # object radius as a fraction of the image side
    backgrounds: tuple[str, ...]
    noise: tuple[float, float]  # range of the std of the per-pixel noise, 0-255
    distractors: int  # up to this many thin lines and specks that are not objects
    repeat: float = 0.3  # chance that an object copies an earlier one's colour and shape, so that counts exceed 1


LEVELS = {
    "easy": Level(
        objects=(1, 4),
        shapes=("circle", "square", "triangle", "star"),
        colours=("red", "green", "blue", "yellow", "purple"),
        size=(0.12, 0.22),
        backgrounds=("plain",),
        noise=(3, 5),
        distractors=0,
    ),
    "hard": Level(
        objects=(1, 6),
        shapes=tuple(SHAPES),
        colours=tuple(COLOURS),
        size=(0.08, 0.2),
        backgrounds=tuple(BACKGROUNDS),
        noise=(3, 14),
        distractors=4,
    ),
}


@dataclass
class Scene:
    image: Image.Image  # RGB
    mask: Image.Image  # "L" label map: pixel value k = object with "id" k, 0 = background
    objects: list[dict]


def place_objects(rng: np.random.Generator, level: Level, size: int) -> list[dict]:
    """Rejection sampling of bounding circles that keep a gap and stay inside; objects that do not fit are dropped."""
    gap = max(2.0, 0.02 * size)  # a few pixels, so that no two objects ever touch once rasterised
    objects: list[dict] = []
    num = int(rng.integers(level.objects[0], level.objects[1] + 1))
    for r in sorted(rng.uniform(*level.size, size=num) * size, reverse=True):  # the big ones first: they pack better
        r = round(float(r), 1)
        if objects and rng.random() < level.repeat:
            other = objects[int(rng.integers(len(objects)))]
            colour, shape = other["colour"], other["shape"]
        else:
            colour = level.colours[int(rng.integers(len(level.colours)))]
            shape = level.shapes[int(rng.integers(len(level.shapes)))]
        margin = math.ceil(r) + 1
        for _ in range(200):
            # integer centers: a point's pixel is the shape's center pixel whether a reader floors or rounds
            x, y = (float(v) for v in rng.integers(margin, size - margin, size=2))
            if all(math.hypot(x - o["center"][0], y - o["center"][1]) >= r + o["size"] + gap for o in objects):
                objects.append(
                    {
                        "id": len(objects) + 1,
                        "label": f"{colour} {shape}",
                        "colour": colour,
                        "shape": shape,
                        "center": [x, y],
                        "size": r,
                        "position": position_word(x, y, size, size),
                    }
                )
                break
    return objects


def draw_distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, level: Level, size: int) -> None:
    """Thin lines and specks in muted colours, drawn under the objects: clutter the model must learn to ignore."""
    for _ in range(int(rng.integers(0, level.distractors + 1))):
        colour = tuple(int(v) for v in rng.integers(70, 170, size=3))
        x, y = rng.uniform(0, size, size=2)
        if rng.random() < 0.5:
            length, angle = rng.uniform(0.05, 0.15) * size, rng.uniform(0, 2 * math.pi)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line([(x, y), end], fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(0.004, 0.01) * size + 0.5
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def make_scene(seed: int, index: int, level: str = "easy", image_size: int = 224) -> Scene:
    """Image `index` of the dataset `seed` (both >= 0): its own random generator, independent of the other images."""
    rng = np.random.default_rng([seed, index, 0])
    lv = LEVELS[level]
    objects = place_objects(rng, lv, image_size)
    background = BACKGROUNDS[lv.backgrounds[int(rng.integers(len(lv.backgrounds)))]](rng, image_size)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    mask = Image.new("L", (image_size, image_size), 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    draw_distractors(draw, rng, lv, image_size)
    for obj in objects:
        draw_object(draw, obj, COLOURS[obj["colour"]])
        draw_object(mask_draw, obj, obj["id"])
    noise = rng.standard_normal((image_size, image_size, 3), dtype=np.float32) * rng.uniform(*lv.noise)
    image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
    return Scene(image, mask, objects)
