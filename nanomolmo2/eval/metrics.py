"""Molmo2's evaluation metrics (docs/MOLMO2.md, Metrics), on plain Python / numpy data.

- Pointing: predicted points are matched one-to-one to the objects by distance (Hungarian algorithm); a
  matched point is correct when it lies inside its object's mask. precision = correct / predictions,
  recall = correct / objects, F1. An image without objects scores 1 only when nothing is predicted.
- Video pointing: the same, where a point can only match an object at the same timestamp (one decimal).
- Counting: exact match (and within one).
- VQA: exact match after normalisation (lower case, no punctuation, articles or extra spaces).
"""

from __future__ import annotations

import string

import numpy as np

UNMATCHABLE = 1e9


def hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one assignment for a rectangular cost matrix: (row, column) pairs.

    The O(n^3) shortest-augmenting-path form of the Hungarian algorithm (rows <= columns after a transpose).
    """
    cost = np.asarray(cost, dtype=float)
    if cost.size == 0:
        return []
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=int)  # match[j] = row (1-based) assigned to column j; 0 = free
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        best = np.full(m + 1, np.inf)
        previous = np.zeros(m + 1, dtype=int)
        used = np.zeros(m + 1, dtype=bool)
        while match[j0]:
            used[j0] = True
            i0 = match[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < best[1:])
            best[1:][better] = reduced[better]
            previous[1:][better] = j0
            j1 = 1 + int(np.argmin(np.where(free, best[1:], np.inf)))
            delta = best[j1]
            u[match[used]] += delta
            v[used] -= delta
            best[1:][free] -= delta
            j0 = j1
        while j0:  # augment along the path
            j1 = previous[j0]
            match[j0] = match[j1]
            j0 = j1
    pairs = [(int(match[j]) - 1, j - 1) for j in range(1, m + 1) if match[j]]
    return [(c, r) for r, c in pairs] if transposed else pairs


def f1_scores(correct: int, predicted: int, expected: int) -> dict[str, float]:
    if expected == 0:
        score = 1.0 if predicted == 0 else 0.0
        return {"precision": score, "recall": score, "f1": score}
    precision = correct / predicted if predicted else 0.0
    recall = correct / expected
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def inside(mask: np.ndarray, object_id: int, x: float, y: float) -> bool:
    """Is pixel (x, y) part of object `object_id` in a label map (border pixels count as inside)?"""
    col, row = int(np.floor(x)), int(np.floor(y))
    return 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col] == object_id


def point_f1(points: list[tuple[float, float]], mask: np.ndarray, object_ids: list[int]) -> dict[str, float]:
    """Pointing scores of pixel `points` against the objects `object_ids` of a label-map `mask`."""
    centers = [np.argwhere(mask == k).mean(0)[::-1] for k in object_ids]  # (x, y) of each object's pixels
    cost = np.array([[np.hypot(px - cx, py - cy) for cx, cy in centers] for px, py in points]).reshape(
        len(points), len(object_ids)
    )
    matched = hungarian(cost)
    correct = sum(inside(mask, object_ids[j], *points[i]) for i, j in matched)
    return f1_scores(correct, len(points), len(object_ids))


def video_point_f1(
    points: list[tuple[float, float, float]],
    masks: np.ndarray,
    times: list[float],
    targets: list[tuple[float, int]],
) -> dict[str, float]:
    """Video pointing: `points` (t, x, y) against `targets` (t, object id) in per-frame label maps.

    A point can only match a target with the same timestamp (to 0.1 s); it is correct inside that
    object's mask in the frame nearest to the time.
    """

    def frame(t: float) -> np.ndarray:
        return masks[int(np.argmin(np.abs(np.asarray(times) - t)))]

    cost = np.full((len(points), len(targets)), UNMATCHABLE)
    for i, (t, x, y) in enumerate(points):
        for j, (target_t, object_id) in enumerate(targets):
            if round(t, 1) == round(target_t, 1):
                cells = np.argwhere(frame(target_t) == object_id)
                center = cells.mean(0)[::-1] if len(cells) else (x, y)
                cost[i, j] = np.hypot(x - center[0], y - center[1])
    matched = [(i, j) for i, j in hungarian(cost) if cost[i, j] < UNMATCHABLE]
    correct = sum(inside(frame(targets[j][0]), targets[j][1], points[i][1], points[i][2]) for i, j in matched)
    return f1_scores(correct, len(points), len(targets))


def normalize_answer(text: str) -> str:
    """VQA normalisation: lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower()
    text = "".join(" " if c in string.punctuation else c for c in text)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def vqa_match(prediction: str, truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(truth)


def count_match(prediction: int | None, truth: int, tolerance: int = 0) -> bool:
    return prediction is not None and abs(prediction - truth) <= tolerance
