"""Molmo2's metrics on hand-made cases."""

import itertools

import numpy as np
import pytest

from nanomolmo2.eval.metrics import hungarian, normalize_answer, point_f1, video_point_f1, vqa_match


def two_objects() -> np.ndarray:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2:6, 2:6] = 1  # object 1: rows/cols 2..5
    mask[10:18, 10:18] = 2
    return mask


def test_hungarian_is_optimal():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, m = (int(v) for v in rng.integers(1, 6, size=2))
        cost = rng.random((n, m))
        pairs = hungarian(cost)
        assert len(pairs) == min(n, m)
        small = cost if n <= m else cost.T  # brute force: every way to give each row its own column
        best = min(
            sum(small[i, c] for i, c in enumerate(cols))
            for cols in itertools.permutations(range(small.shape[1]), small.shape[0])
        )
        assert sum(cost[i, j] for i, j in pairs) == pytest.approx(best)


def test_point_on_the_mask_border_counts():
    mask = two_objects()
    assert point_f1([(5.9, 5.0), (17.0, 10.0)], mask, [1, 2])["f1"] == 1.0  # last pixel column/row of each
    assert point_f1([(6.0, 5.0), (17.0, 10.0)], mask, [1, 2])["f1"] == pytest.approx(0.5)  # one pixel outside


def test_two_predictions_for_one_object():
    """Only one of them can match: precision 1/2, recall 1/2 with a second object missed."""
    scores = point_f1([(3, 3), (4, 4)], two_objects(), [1, 2])
    assert scores == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    scores = point_f1([(3, 3), (4, 4)], two_objects(), [1])
    assert scores == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3})


def test_no_objects_and_no_predictions():
    assert point_f1([], two_objects(), [])["f1"] == 1.0  # "There are none." when there are none
    assert point_f1([(3, 3)], two_objects(), [])["f1"] == 0.0
    assert point_f1([], two_objects(), [1, 2])["f1"] == 0.0


def test_hungarian_assignment_not_greedy():
    """A point between two objects must not steal the match of the point that is inside one."""
    mask = np.zeros((10, 30), dtype=np.uint8)
    mask[:, 0:10] = 1
    mask[:, 20:30] = 2
    # (9, 5) is inside object 1 near its edge, (25, 5) inside object 2: each must get its own object
    scores = point_f1([(9.0, 5.0), (25.0, 5.0)], mask, [1, 2])
    assert scores["f1"] == 1.0


def test_video_points_need_the_right_timestamp():
    masks = np.stack([two_objects(), np.zeros((20, 20), dtype=np.uint8)])
    times = [0.0, 0.5]
    targets = [(0.0, 1), (0.0, 2)]
    assert video_point_f1([(0.0, 3, 3), (0.0, 12, 12)], masks, times, targets)["f1"] == 1.0
    wrong_time = video_point_f1([(0.5, 3, 3), (0.0, 12, 12)], masks, times, targets)
    assert wrong_time == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert video_point_f1([], masks, times, [])["f1"] == 1.0


def test_vqa_normalisation():
    assert normalize_answer("  The Red, circle!  ") == "red circle"
    assert vqa_match("Yes.", "yes") and vqa_match("Left to right.", "left to right")
    assert not vqa_match("No.", "Yes.")
