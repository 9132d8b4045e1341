"""Molmo2's text format for points, counts and object tracks ("html-v2"), and a forgiving parser for it.

Molmo2 answers pointing and counting questions with points written inline in the text:

    <points coords="1 1 900 400 2 911 800">cats</points>          one image: image id, then (index, x, y) triples
    <points coords="0.5 1 911 800;1.0 2 900 400">dog</points>     video: timestamp per frame, index runs on
    <tracks coords="0.0 1 259 340;1.0 1 138 427">car</tracks>     tracks: the index is the object id

x and y are integers on a 0-1000 scale of the image width/height, printed with %03d. Groups (images or frames)
are separated by ";". The parser also reads the older Molmo v1 tags (`<point x="52.9" y="43.9" ...>`, percent).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

POINT_PROMPT = "Point to {label}\nPlease say 'There are none.' if it is not in the image."
COUNT_PROMPT = "How many {label} are there?"
VIDEO_POINT_PROMPT = "Point to {label}\nPlease say 'There are none.' if it is not in the video."

STYLES = ("pointing", "point_count", "count_point", "count")
NO_MATCH = "There are none."

# -----------------------------------------------------------------------------
# formatting


def to_coords(points: Sequence[tuple[float, float]], width: float, height: float) -> list[tuple[int, int]]:
    """Pixel (x, y) points -> integer 0..1000 coordinates, sorted by (x, y) after rounding."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")

    def scale(v: float, size: float) -> int:
        return min(max(round(1000 * v / size), 0), 1000)  # Python round: halves go to the even integer

    return sorted((scale(x, width), scale(y, height)) for x, y in points)


def _group(t: str, indexed: Sequence[tuple[int, int, int]]) -> str:
    return " ".join([t] + [f"{i} {x:03d} {y:03d}" for i, x, y in indexed])


def _answer(coords: str, label: str, n: int, style: str, tag: str = "points") -> str:
    """Wrap a coords string into the answer text of one style; `n` is the number of points."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}, expected one of {STYLES}")
    if style == "count":
        return str(n)
    if n == 0:
        return NO_MATCH
    points = f'<{tag} coords="{coords}">{label}</{tag}>'
    if style == "point_count":
        return f"Counting the {points} shows a total of {n}."
    if style == "count_point":
        return f"There are {n} {points}."
    return points


def _indexed_groups(groups: Sequence[tuple[str, list[tuple[int, int]]]]) -> tuple[str, int]:
    """(group id, sorted coords) per group -> coords string with an index that runs on across groups."""
    parts, n = [], 0
    for t, coords in groups:
        if not coords:
            continue  # groups without points are left out
        parts.append(_group(t, [(n + k + 1, x, y) for k, (x, y) in enumerate(coords)]))
        n += len(coords)
    return ";".join(parts), n


def format_points(
    points: Sequence[tuple[float, float]],
    label: str,
    width: float,
    height: float,
    style: str = "pointing",
    image_id: int = 1,
) -> str:
    """Answer text for the pixel points of one image."""
    coords, n = _indexed_groups([(str(image_id), to_coords(points, width, height))])
    return _answer(coords, label, n, style)


def format_video_points(
    frames: Sequence[tuple[float, Sequence[tuple[float, float]]]],
    label: str,
    width: float,
    height: float,
    style: str = "pointing",
    count: int | None = None,
) -> str:
    """Answer text for (timestamp in seconds, pixel points) frames, written in time order.

    count: the number a counting answer states, when it is not the number of points (an object that is
    pointed at in several frames still counts once).
    """
    ordered = sorted(frames, key=lambda f: f[0])
    coords, n = _indexed_groups([(f"{t:.1f}", to_coords(p, width, height)) for t, p in ordered])
    return _answer(coords, label, n if count is None else count, style)


def format_tracks(
    frames: Sequence[tuple[float, Mapping[int, tuple[float, float]]]],
    label: str,
    width: float,
    height: float,
) -> str:
    """`<tracks>` text for (timestamp, {object_id: pixel (x, y)}) frames; an object keeps its id in every frame."""
    parts, n = [], 0
    for t, objects in sorted(frames, key=lambda f: f[0]):
        if not objects:
            continue
        ids = sorted(objects)
        n += len(ids)
        # one point at a time so that to_coords' (x, y) sort does not reorder the objects
        parts.append(_group(f"{t:.1f}", [(i, *to_coords([objects[i]], width, height)[0]) for i in ids]))
    return _answer(";".join(parts), label, n, "pointing", tag="tracks")


# -----------------------------------------------------------------------------
# parsing

_TAG = re.compile(r"<(points?|tracks)\b([^<>]*)(>?)", re.IGNORECASE)  # body stops at the next < or >
_COORDS = re.compile(r"\bcoords\s*=\s*(\"?)([^\"]*)(\"?)", re.IGNORECASE)
_ATTR = re.compile(r"\b(\w+)\s*=\s*\"([^\"<>]*)\"")  # only attributes with both quotes count
_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # coordinates and times are never negative
_INT = re.compile(r"\d+")


def _number(s: str) -> float | None:
    if not _NUMBER.fullmatch(s):
        return None
    v = float(s)
    return v if math.isfinite(v) else None  # a 400-digit number overflows to inf


def _parse_coords(value: str) -> list[tuple[float, int, float, float]]:
    """'t i x y i x y;t i x y' -> points. A group is read up to its first bad or incomplete (i, x, y) triple,
    since after a bad token we no longer know which number is which."""
    out = []
    for group in value.split(";"):
        tokens = group.split()
        t = _number(tokens[0]) if tokens else None
        if t is None:
            continue
        for k in range(1, len(tokens) - 2, 3):
            i, x, y = tokens[k], _number(tokens[k + 1]), _number(tokens[k + 2])
            if not _INT.fullmatch(i) or x is None or y is None:
                break
            out.append((t, int(i), x, y))
    return out


def _parse_v1(attrs: dict[str, str]) -> list[tuple[float, float]]:
    """Molmo v1 attributes (x/y or x1/y1, x2/y2, ... in percent) -> 0..1000 (x, y) pairs."""
    keys = [("x", "y")] if "x" in attrs else [(f"x{k}", f"y{k}") for k in range(1, len(attrs) + 1)]
    out = []
    for kx, ky in keys:
        x, y = _number(attrs.get(kx, "").strip()), _number(attrs.get(ky, "").strip())
        if x is None or y is None:
            break
        out.append((10 * x, 10 * y))
    return out


def parse_points(text: str) -> list[tuple[float, int, float, float]]:
    """Every point in `text`, in order, as (t, index, x, y): t is the image id or timestamp, x and y are on the
    0..1000 scale as written (Molmo v1 percent values are multiplied by 10). Never raises on malformed text."""
    if not isinstance(text, str):
        return []
    out: list[tuple[float, int, float, float]] = []
    v1_index = 0  # v1 points carry no index: number them 1, 2, ... across the text
    for tag in _TAG.finditer(text):
        body = tag.group(2)
        closed = tag.group(3) == ">" or tag.end() < len(text)  # False: the text ends inside this tag
        coords = _COORDS.search(body)
        if coords:
            value = coords.group(2)
            if not coords.group(3) and not closed:
                value = re.sub(r"[^\s;]*$", "", value)  # text cut off mid-number: the last token may be incomplete
            out.extend(_parse_coords(value))
        elif tag.group(1).lower() in ("point", "points"):
            for x, y in _parse_v1(dict(_ATTR.findall(body))):
                v1_index += 1
                out.append((1.0, v1_index, x, y))
    return out


_TOTAL = re.compile(r"\btotal of (\d+)\b", re.IGNORECASE)
_THERE_ARE = re.compile(r"\bthere (?:are|is) (\d+)\b", re.IGNORECASE)
_NONE = re.compile(r"\bthere are none\b", re.IGNORECASE)
_BARE = re.compile(r"\s*(\d+)\s*\.?\s*")


def parse_count(text: str) -> int | None:
    """The count an answer states ("2", "... a total of 2.", "There are 2 <points ...", "There are none." -> 0),
    or None when it states none."""
    if not isinstance(text, str):
        return None
    for pattern in (_TOTAL, _THERE_ARE):
        if m := pattern.search(text):
            return int(m.group(1))
    if _NONE.search(text):
        return 0
    m = _BARE.fullmatch(text)
    return int(m.group(1)) if m else None
