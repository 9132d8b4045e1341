"""The four pictures of a walk (walk.py), drawn with PIL, each at most MAX_WIDTH pixels wide.

- crops.png      the image with its crop grid (overlaps shaded), the global crop, and the crops themselves;
                 for a video, the sampled frames with their times and the square crops the ViT reads
- pooling.png    pooling windows over the patch grids: thin lines between patches, thick ones between
                 windows, padded (-1) slots crossed out
- tokens.png     the prompt, one coloured cell per token, in reading order
- attention.png  the prompt's attention mask, the mask of a packed training row of two examples, and a zoom
                 on the two questions of the first example

Longer than 400 lines because it holds four drawings of about a hundred lines each, every one read start
to finish on its own; a file per picture would add files without adding clarity.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
import torch.nn.functional as F

from ..eval.draw import grid
from ..tokens import VISION_TOKEN_IDS
from .walk import Walk, unpatchify

MAX_WIDTH = 1600
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
KIND_COLOURS = {
    "BOS": (30, 30, 30),
    "text": (205, 205, 205),
    "chat marker": (120, 120, 120),
    "image label": (190, 170, 110),
    "frame time": (100, 200, 225),
    "<low_res_im_start>": (225, 60, 165),
    "<im_start>": (200, 30, 30),
    "<im_patch>": (250, 160, 40),
    "<im_col>": (50, 110, 220),
    "<im_end>": (120, 40, 160),
    "<frame_start>": (40, 160, 80),
    "<frame_end>": (20, 90, 50),
}
CROP_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
# Attention: causal pairs of the prompt / example 1 and of example 2; vision pairs allowed by causality anyway,
# and vision pairs only the bidirectional block allows (a vision token seeing a later one).
CAUSAL, SECOND, QUESTION_2 = (60, 90, 170), (50, 150, 90), (150, 90, 200)
VISION, VISION_EXTRA = (215, 115, 20), (250, 195, 120)
WINDOW_LINE, PATCH_LINE, PAD_CROSS = (255, 220, 0), (235, 235, 235), (220, 0, 0)


def font(size: int = 15) -> PIL.ImageFont.ImageFont:
    try:
        return PIL.ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return PIL.ImageFont.load_default()


def text_block(text: str, width: int, size: int = 15) -> PIL.Image.Image:
    """`text` word-wrapped to `width` pixels, black on white."""
    face, lines, line = font(size), [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if face.getlength(candidate) <= width - 8 or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    lines.append(line)
    block = PIL.Image.new("RGB", (width, len(lines) * (size + 5) + 6), WHITE)
    draw = PIL.ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * (size + 5)), line, fill=BLACK, font=face)
    return block


def stack(parts: list[PIL.Image.Image], gap: int = 8) -> PIL.Image.Image:
    """Images one under the other, left-aligned, on white."""
    canvas = PIL.Image.new("RGB", (max(p.width for p in parts), sum(p.height + gap for p in parts) - gap), WHITE)
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height + gap
    return canvas


def side_by_side(parts: list[PIL.Image.Image], gap: int = 24) -> PIL.Image.Image:
    width = sum(p.width for p in parts) + gap * (len(parts) - 1)
    canvas = PIL.Image.new("RGB", (width, max(p.height for p in parts)), WHITE)
    x = 0
    for part in parts:
        canvas.paste(part, (x, 0))
        x += part.width + gap
    return canvas


def labelled(image: PIL.Image.Image, text: str) -> PIL.Image.Image:
    return stack([image, text_block(text, max(image.width, 120), 14)], gap=0)


def fit(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    scale = min(width / image.width, height / image.height)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), PIL.Image.BILINEAR)


def legend(entries: list[tuple[tuple[int, int, int], str]], width: int) -> PIL.Image.Image:
    """Coloured squares with labels, wrapped into rows."""
    face, x, y, places = font(14), 6, 4, []
    for colour, label in entries:
        w = 22 + int(face.getlength(label)) + 18
        if x + w > width and x > 6:
            x, y = 6, y + 22
        places.append((x, y, colour, label))
        x += w
    image = PIL.Image.new("RGB", (width, y + 26), WHITE)
    draw = PIL.ImageDraw.Draw(image)
    for x, y, colour, label in places:
        draw.rectangle((x, y + 2, x + 14, y + 16), fill=colour, outline=BLACK)
        draw.text((x + 20, y + 1), label, fill=BLACK, font=face)
    return image


# ---------------------------------------------------------------- crops.png


def crops_picture(walk: Walk) -> PIL.Image.Image:
    processor = walk.processor
    size, p, (left, right) = processor.crop_size, processor.patch_size, processor.overlap_margins
    crops = unpatchify(walk.vision.pixel_values, p)  # [crops, S, S, 3], exactly what the ViT gets
    if walk.kind == "video":
        return frames_picture(walk, crops)
    h, w = walk.pixels.shape[:2]
    shown = fit(PIL.Image.fromarray(walk.pixels), 1000, 640)
    global_view = labelled(PIL.Image.fromarray(crops[0]).resize((300, 300)), "crop 0: the whole image, squashed")
    if walk.tiling is None:
        title = f"{w}x{h} image -> the global crop only ({size}x{size})"
        return stack([text_block(title, MAX_WIDTH, 17), side_by_side([shown, global_view])])
    rows, cols = walk.tiling
    margin = (left + right) * p
    step = size - margin  # canvas pixels between the starts of neighbouring crops
    sx, sy = shown.width / walk.canvas[1], shown.height / walk.canvas[0]  # canvas px -> shown px
    overlay = PIL.Image.new("RGBA", shown.size, (0, 0, 0, 0))
    draw = PIL.ImageDraw.Draw(overlay)
    for r in range(1, rows):  # strips shared by two neighbouring crops
        draw.rectangle((0, r * step * sy, shown.width, (r * step + margin) * sy), fill=(255, 230, 0, 90))
    for c in range(1, cols):
        draw.rectangle((c * step * sx, 0, (c * step + margin) * sx, shown.height), fill=(255, 230, 0, 90))
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        colour = (*CROP_COLOURS[k % len(CROP_COLOURS)], 255)
        box = (c * step * sx, r * step * sy, (c * step + size) * sx - 1, (r * step + size) * sy - 1)
        draw.rectangle(box, outline=colour, width=3)
        draw.text((box[0] + 6, box[1] + 4), f"crop {k + 1}", fill=colour, font=font(18))
    shown = PIL.Image.alpha_composite(shown.convert("RGBA"), overlay).convert("RGB")

    # The high-res crops as the ViT gets them; the margins each leaves to its neighbour are darkened.
    thumb = min(220, (MAX_WIDTH - 10 * cols) // cols)
    n = {"top": left, "left": left, "bottom": right, "right": right}  # patches each side leaves to a neighbour
    tiles = []
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        tile = PIL.Image.fromarray(crops[k + 1]).resize((thumb, thumb)).convert("RGBA")
        shade = PIL.Image.new("RGBA", tile.size, (0, 0, 0, 0))
        d, px = PIL.ImageDraw.Draw(shade), thumb / size * p
        boxes = {
            "top": (r > 0, (0, 0, thumb, n["top"] * px)),
            "bottom": (r < rows - 1, (0, thumb - n["bottom"] * px, thumb, thumb)),
            "left": (c > 0, (0, 0, n["left"] * px, thumb)),
            "right": (c < cols - 1, (thumb - n["right"] * px, 0, thumb, thumb)),
        }
        for side, (has_neighbour, box) in boxes.items():
            if has_neighbour and n[side]:
                d.rectangle(box, fill=(0, 0, 0, 120))
        d.rectangle((0, 0, thumb - 1, thumb - 1), outline=(*CROP_COLOURS[k % len(CROP_COLOURS)], 255), width=3)
        tiles.append(labelled(PIL.Image.alpha_composite(tile, shade).convert("RGB"), f"crop {k + 1}"))
    title = (
        f"{w}x{h} image -> {rows} x {cols} crops of {size}x{size} cut from a {walk.canvas[1]}x{walk.canvas[0]} "
        f"canvas, plus crop 0, the whole image squashed (low resolution). Yellow: where neighbours overlap "
        f"({left + right} patches). Below, the darkened margins are left out of pooling, so that every canvas "
        "patch is pooled once."
    )
    top = side_by_side([shown, global_view])
    return stack([text_block(title, max(top.width, 900), 17), top, grid(tiles, columns=cols)])


def frames_picture(walk: Walk, crops: np.ndarray) -> PIL.Image.Image:
    frames = [PIL.Image.fromarray(f) for f in walk.pixels]
    tile_w, tile_h = fit(frames[0], 300, 120).size
    columns = max(1, min(len(frames), (MAX_WIDTH - 6) // (tile_w + 6)))
    tiles = [labelled(f.resize((tile_w, tile_h)), f"{t:.2f} s") for f, t in zip(frames, walk.times, strict=True)]
    strip = grid(tiles, columns)
    side = min(120, (MAX_WIDTH - 6) // min(len(crops), 12) - 6)
    squares = grid([PIL.Image.fromarray(c).resize((side, side)) for c in crops], min(len(crops), 12))
    size = walk.processor.crop_size
    title = (
        f"{len(frames)} frames sampled from {walk.source.name} at the times shown; below, each frame squashed "
        f"to one {size}x{size} crop, what the ViT reads"
    )
    return stack([text_block(title, max(strip.width, 600), 17), strip, squares])


# ---------------------------------------------------------------- pooling.png


def windows_panel(
    patches: np.ndarray, windows: torch.Tensor, rows: int, cols: int, pool: tuple[int, int], cell: int
) -> PIL.Image.Image:
    """Pooling windows on their patch grid: windows `[rows*cols, ph*pw]` of indices into `patches`
    `[N, p, p, 3]`; window k sits at (k // cols, k % cols), its slot j at (j // pw, j % pw) inside it."""
    ph, pw = pool
    ids = windows[:, : ph * pw].reshape(rows, cols, ph, pw).permute(0, 2, 1, 3).reshape(rows * ph, cols * pw)
    p = patches.shape[1]
    picture = patches[ids.clamp(min=0).numpy()]  # [R, C, p, p, 3]
    picture[ids.numpy() < 0] = GREY
    picture = picture.transpose(0, 2, 1, 3, 4).reshape(rows * ph * p, cols * pw * p, 3)  # [R*p, C*p, 3]
    image = PIL.Image.fromarray(np.ascontiguousarray(picture)).resize((cols * pw * cell, rows * ph * cell))
    draw = PIL.ImageDraw.Draw(image)
    width, height = image.size
    if cell >= 8:  # thin lines between patches, when there is room for them
        for i in range(rows * ph + 1):
            draw.line((0, i * cell, width, i * cell), fill=PATCH_LINE, width=1)
        for j in range(cols * pw + 1):
            draw.line((j * cell, 0, j * cell, height), fill=PATCH_LINE, width=1)
    for r, c in zip(*np.nonzero(ids.numpy() < 0), strict=True):  # padded slots: crossed out
        x, y = c * cell, r * cell
        draw.line((x + 2, y + 2, x + cell - 3, y + cell - 3), fill=PAD_CROSS, width=2)
        draw.line((x + 2, y + cell - 3, x + cell - 3, y + 2), fill=PAD_CROSS, width=2)
    thick = 3 if cell >= 8 else 2
    for i in range(rows + 1):
        draw.line((0, i * ph * cell, width, i * ph * cell), fill=WINDOW_LINE, width=thick)
    for j in range(cols + 1):
        draw.line((j * pw * cell, 0, j * pw * cell, height), fill=WINDOW_LINE, width=thick)
    return image


def cell_size(grid_h: int, grid_w: int, width: int, height: int) -> int:
    return max(3, min(48, width // grid_w, height // grid_h))


def pooling_picture(walk: Walk) -> PIL.Image.Image:
    p, side = walk.processor.patch_size, walk.processor.crop_size // walk.processor.patch_size
    crops = unpatchify(walk.vision.pixel_values, p)  # [crops, S, S, 3]
    # Every patch of every crop as one [p, p, 3] tile, in the flat order the pooling indices use.
    tiles = crops.reshape(-1, side, p, side, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, p, p, 3)
    (ph, pw), windows = walk.pooling, walk.vision.token_pooling
    if walk.kind == "video":
        _, rows, cols = walk.vision.grid
        cell = cell_size(rows * ph, cols * pw, 900, 700)
        first = windows_panel(tiles, windows[: rows * cols], rows, cols, walk.pooling, cell)
        caption = (
            f"frame 1 of {len(walk.times)} ({walk.times[0]:.2f} s): its {side}x{side} patches in {rows}x{cols} "
            f"windows of {ph}x{pw}, one vision token each (the next frame's indices start at {side * side})"
        )
        panels = [stack([text_block(caption, max(first.width, 420)), first])]
    else:
        low_h, low_w, high_h, high_w = walk.vision.grid
        n_low = low_h * low_w
        cell = cell_size(low_h * ph, low_w * pw, 620, 620)
        low = windows_panel(tiles, windows[:n_low], low_h, low_w, walk.pooling, cell)
        caption = f"low-res: the global crop's {side}x{side} patches in {low_h}x{low_w} windows of {ph}x{pw}"
        panels = [stack([text_block(caption, max(low.width, 360)), low])]
        if high_h:
            cell = cell_size(high_h * ph, high_w * pw, MAX_WIDTH - panels[0].width - 24, 900)
            high = windows_panel(tiles, windows[n_low:], high_h, high_w, walk.pooling, cell)
            caption = (
                f"high-res: the canvas rebuilt from the crops' patches (each once, overlaps dropped) in "
                f"{high_h}x{high_w} windows of {ph}x{pw}"
            )
            panels.append(stack([text_block(caption, max(high.width, 360)), high]))
    body = side_by_side(panels)
    key = legend(
        [
            (PATCH_LINE, f"thin lines: patches ({p}x{p} px)"),
            (WINDOW_LINE, "thick lines: one window = one vision token"),
            (PAD_CROSS, f"crossed out: padding, -1 in the pooling index ({int((windows < 0).sum())} slots in all)"),
        ],
        max(body.width, 600),
    )
    return stack([body, key])


# ---------------------------------------------------------------- tokens.png


def tokens_picture(walk: Walk) -> PIL.Image.Image:
    kinds, length = walk.token_kinds, len(walk.token_kinds)
    cell, label_w = (24 if length <= 600 else 16), 60
    cols = min(length, (MAX_WIDTH - label_w - 10) // cell)
    body = PIL.Image.new("RGB", (label_w + cols * cell + 10, math.ceil(length / cols) * cell + 4), WHITE)
    draw, face = PIL.ImageDraw.Draw(body), font(12)
    for i, kind in enumerate(kinds):
        r, c = divmod(i, cols)
        if c == 0:
            draw.text((4, r * cell + (cell - 12) // 2), str(i), fill=BLACK, font=face)
        x, y = label_w + c * cell, r * cell + 2
        draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=KIND_COLOURS[kind])
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    key = legend([(KIND_COLOURS[k], f"{k} ({n})") for k, n in counts.items()], body.width)
    title = (
        f"the prompt, {length} tokens in reading order ({cols} a row; the number is the index of the row's first "
        f"token). Each <im_patch> is a slot where one vision token is added. Question: {walk.question!r}"
    )
    return stack([text_block(title, body.width, 16), body, key])


# ---------------------------------------------------------------- attention.png


def mask_panel(layers: list[tuple[torch.Tensor, tuple[int, int, int]]], size: int) -> PIL.Image.Image:
    """Disjoint `[L, L]` boolean masks painted in their colours on white, `size` x `size` pixels; when L > size,
    blocks of k x k pairs are averaged first. Row = query, column = key."""
    length = layers[0][0].shape[0]
    k = math.ceil(length / size)
    n = math.ceil(length / k)
    rgb = torch.full((3, n, n), 255.0)
    for mask, colour in layers:
        share = F.pad(mask.float(), (0, n * k - length, 0, n * k - length)).reshape(n, k, n, k).mean((1, 3))
        rgb -= share * (255.0 - torch.tensor(colour, dtype=torch.float32))[:, None, None]
    image = PIL.Image.fromarray(rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return image.resize((size, size), PIL.Image.NEAREST)


def with_strips(panel: PIL.Image.Image, colours: list[tuple[int, int, int]]) -> PIL.Image.Image:
    """The panel with a band of per-token colours along its top (keys) and its left (queries)."""
    band = PIL.Image.fromarray(np.array([colours], dtype=np.uint8)).resize((panel.width, 10), PIL.Image.NEAREST)
    framed = PIL.Image.new("RGB", (panel.width + 14, panel.height + 14), WHITE)
    framed.paste(band, (14, 0))
    framed.paste(band.transpose(PIL.Image.Transpose.TRANSPOSE), (0, 14))
    framed.paste(panel, (14, 14))
    return framed


def mask_layers(mask: torch.Tensor, vision: torch.Tensor, groups: list[tuple[torch.Tensor, tuple]]) -> list:
    """Colour layers: the vision pairs (on or below the diagonal, and above it), then each group's other
    allowed pairs (a group = a `[L]` set of query tokens with its colour)."""
    both = mask & vision[:, None] & vision[None, :]
    later = torch.ones_like(mask).triu(1)  # key after query
    layers = [(both & ~later, VISION), (both & later, VISION_EXTRA)]
    return layers + [(mask & ~both & rows[:, None], colour) for rows, colour in groups]


def attention_picture(walk: Walk) -> PIL.Image.Image:
    size = (MAX_WIDTH - 2 * 30 - 3 * 14) // 3
    vision = torch.isin(torch.tensor(walk.input_ids), torch.tensor(VISION_TOKEN_IDS))  # [L]
    everyone = torch.ones(len(walk.input_ids), dtype=torch.bool)
    prompt = mask_panel(mask_layers(walk.attention, vision, [(everyone, CAUSAL)]), size)
    prompt = with_strips(prompt, [KIND_COLOURS[k] for k in walk.token_kinds])

    segments, annotations = walk.packed["segment_ids"][0], walk.packed["annotation_ids"][0]
    packed_vision, mask = walk.packed["mm_token_type_ids"][0] > 0, walk.packed_attention
    layers = mask_layers(mask, packed_vision, [(segments == 0, CAUSAL), (segments == 1, SECOND)])
    strip = [VISION if v else (CAUSAL, SECOND)[int(s)] for s, v in zip(segments, packed_vision, strict=True)]
    packed = with_strips(mask_panel(layers, size), strip)

    # Zoom: from the last few tokens of example 1's media to the end of its two questions.
    first = segments == 0
    start = max(int(torch.nonzero(first & (annotations == 1))[0]) - 6, 0)
    end = int(first.sum())
    zoom_layers = [(m[start:end, start:end], colour) for m, colour in layers]
    zoom_strip = [
        VISION if v else (GREY, CAUSAL, QUESTION_2)[int(a)]
        for a, v in zip(annotations[start:end], packed_vision[start:end], strict=True)
    ]
    zoom = with_strips(mask_panel(zoom_layers, size), zoom_strip)

    captions = [
        f"The prompt ({len(walk.input_ids)} tokens). Blue: causal, a token sees itself and earlier ones. Orange "
        "square: the vision tokens, which all see each other; its light upper half is what this adds to causal. "
        "White: hidden.",
        f"A packed training row ({mask.shape[0]} tokens): example 1 (blue, 2 questions) and example 2 (green, 1 "
        "question) never see each other: the mask is block-diagonal.",
        f"Zoom on example 1, tokens {start}..{end - 1}: the end of its media, then question 1 (blue band) and "
        "question 2 (violet band). Each question sees the shared media and itself, never the other question.",
    ]
    panels = [
        stack([panel, text_block(text, panel.width)])
        for panel, text in zip([prompt, packed, zoom], captions, strict=True)
    ]
    title = (
        "Attention masks (row = query, column = key; coloured = may attend). The bands along the edges colour the "
        "tokens (left panel: as in tokens.png)."
    )
    return stack([text_block(title, MAX_WIDTH, 17), side_by_side(panels, gap=30)])


# ---------------------------------------------------------------- all four


def save_pictures(walk: Walk, out: str | Path) -> dict[str, Path]:
    """Write crops.png, pooling.png, tokens.png and attention.png into `out`; returns name -> path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    drawings = {
        "crops": crops_picture,
        "pooling": pooling_picture,
        "tokens": tokens_picture,
        "attention": attention_picture,
    }
    paths = {}
    for name, draw in drawings.items():
        paths[name] = folder / f"{name}.png"
        draw(walk).save(paths[name])
    return paths
