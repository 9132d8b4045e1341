"""Molmo2's rules for its video-pointing data (Molmo2-VideoPoint): where a point's time lands, and how each query is
asked and answered. From `Molmo2VideoPoint` in olmo/data/molmo2_datasets.py and `format_video_points` in
olmo/preprocessing/data_formatter.py and olmo/preprocessing/point_formatter.py (allenai/molmo2).

Times (`clip_times`). A clip's frames are timed from the clip start, its first frame at 0.0 (the loader decodes at
start + t and labels the frame t); a point annotated at absolute time t is written at

    floor((t - clip_start) / 0.5) * 0.5      (the 2 fps annotation grid; not snapped to a sampled frame)

and must lie inside the sampled clip. Without the rule a point goes to the nearest sampled frame (`frame_time`).

Styles (`video_point_styles`). Each query of a video draws a style, independently:

    video_point_count   the dataset's own question (a template when it has none)
                        -> "Counting the <points coords=...>label</points> shows a total of N."
    video_point         a template                -> <points coords=...>label</points>

N is the number of points written; a query whose count is 0 is answered "There are none.". A video with more than
one query is one example: its queries are separate conversations, or, with probability 0.2, the turns of a single
conversation. The draws use the generator of the stream position (they change between epochs and repeat on a
resumed run); without one they are stable picks by the row's key.
"""

from __future__ import annotations

import logging
import math
import zlib

import numpy as np

from .examples import Conversation
from .jsonl import whole_number
from .points import NO_MATCH, format_video_points
from .video_io import VideoError

log = logging.getLogger(__name__)
ANNOTATION_STEP = 0.5  # seconds between VideoPoint's annotated frames (2 fps)
P_MULTI_TURN = 0.2  # Molmo2's `p_multi_turn` for VideoPoint
MAX_COUNT = 1 << 20  # the largest count an annotation may state
STYLES = ("video_point_count", "video_point")
# The conversation styles examples.FLAT_WEIGHTS knows (both weigh 0.2 in Molmo2's SFT).
CONVERSATION_STYLES = {"video_point_count": "video_counting", "video_point": "video_pointing"}
# Our own short lists in the spirit of Molmo2's GENERAL_PROMPTS_V1["video_point"] / ["video_point_count"].
TEMPLATES = {
    "video_point": (
        "Point to {label}\nPlease say 'There are none.' if it is not in the video.",
        "Point to every {label} in the video.",
        "Where are the {label}?",
        "Show me where the {label} are.",
        "Locate each {label} in the video.",
        "Find the {label}.",
    ),
    "video_point_count": (
        "How many {label} are there?",
        "How many {label} are there in the video?",
        "Count the {label}.",
        "Point to the {label} and count them.",
        "What is the total number of {label} in the video?",
        "Find each {label}. How many are there?",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# times


def _check_inside(t: float, times: list[float], source: str) -> None:
    """A time more than half a frame step outside the sampled frames is an error (the annotation is skipped)."""
    step = times[1] - times[0] if len(times) > 1 else ANNOTATION_STEP
    if t > times[-1] + step / 2 or t < times[0] - step / 2:
        raise VideoError(
            f"{source}: point time {t:.2f}s is outside the sampled video ({times[0]:.2f}-{times[-1]:.2f}s)"
        )


def frame_time(t: float, times: list[float], source: str, clip_start: float | None = None) -> float:
    """Where a point annotated at `t` (seconds from the video start) is written: with `clip_start` (clip_times),
    floored onto the 2 fps grid from the clip start; without, the nearest sampled frame time."""
    if clip_start is None:
        _check_inside(t, times, source)
        return min(times, key=lambda s: abs(s - t))
    relative = math.floor((t - clip_start) / ANNOTATION_STEP) * ANNOTATION_STEP
    _check_inside(relative, times, source)
    return relative


def by_frame(
    points: list, times: list[float], source: str, clip_start: float | None = None
) -> list[tuple[float, list[tuple[float, float]]]]:
    """[t, x, y] points -> (written time, [(x, y), ...]) per frame, in time order."""
    frames: dict[float, list[tuple[float, float]]] = {}
    for t, x, y in points:
        frames.setdefault(frame_time(t, times, source, clip_start), []).append((x, y))
    return sorted(frames.items())


# ---------------------------------------------------------------------------------------------------------------------
# styles


def draw_styles(num_queries: int, key: str, rng: np.random.Generator | None) -> tuple[list[tuple[str, int]], bool]:
    """Per query (style, template index), and whether the queries form one multi-turn conversation."""

    def pick(n: int, what: str) -> int:
        return int(rng.integers(n)) if rng is not None else zlib.crc32(f"{key}:{what}".encode()) % n

    picks = []
    for k in range(num_queries):
        style = STYLES[pick(len(STYLES), f"{k}:style")]
        picks.append((style, pick(len(TEMPLATES[style]), f"{k}:template")))
    if num_queries < 2:
        return picks, False
    multi_turn = rng.random() < P_MULTI_TURN if rng is not None else zlib.crc32(f"{key}:turns".encode()) % 5 == 0
    return picks, multi_turn


def video_point_turn(
    annotation: dict,
    style: str,
    template: int,
    frames: list[tuple[float, list[tuple[float, float]]]],
    width: int,
    height: int,
) -> tuple[str, str]:
    """(prompt, answer) of one query in `style`; `frames` are its points by written time (`by_frame`)."""
    label = annotation["label"]
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"the label must be a non-empty text, got {label!r}")
    question = annotation.get("question")
    if style == "video_point_count" and isinstance(question, str) and question.strip():
        prompt = question
    else:
        prompt = TEMPLATES[style][template].format(label=label)
    points_written = sum(len(p) for _, p in frames)
    count = whole_number(annotation.get("count", points_written), "count", 0, MAX_COUNT)
    if count == 0 or not frames:
        return prompt, NO_MATCH
    # Times are multiples of 0.5, for which format_video_points' f"{t:.1f}" is Molmo2's str(round(t, 1)).
    answer_style = "point_count" if style == "video_point_count" else "pointing"
    return prompt, format_video_points(frames, label, width, height, answer_style)


def video_point_conversations(
    annotations: list[dict],
    picks: list[tuple[str, int]],
    multi_turn: bool,
    source: str,
    clip_start: float | None,
    times: list[float],
    width: int,
    height: int,
) -> list[Conversation]:
    """Pointing / counting queries in their drawn styles (`draw_styles`): one conversation each, or one multi-turn
    conversation of all of them; a malformed query is skipped with a warning."""
    turns = []
    for annotation, (style, template) in zip(annotations, picks, strict=True):
        try:
            frames = by_frame(annotation.get("points", []), times, source, clip_start)
            turns.append((*video_point_turn(annotation, style, template, frames, width, height), style))
        except (KeyError, ValueError, TypeError, IndexError, ArithmeticError) as e:  # a malformed query
            log.warning("skipped an annotation of %s: %s", source, e)
    if multi_turn and turns:  # the first turn's style names the conversation (both weigh the same)
        return [Conversation([(prompt, answer) for prompt, answer, _ in turns], CONVERSATION_STYLES[turns[0][2]])]
    return [Conversation([(prompt, answer)], CONVERSATION_STYLES[style]) for prompt, answer, style in turns]
