"""Molmo2's metrics on hand-made cases, each value worked out by hand from the rules in allenai/molmo2's
olmo/eval/evaluators.py, olmo/eval/vqa.py and olmo/preprocessing/point_formatter.py."""

import numpy as np
import pytest

from nanomolmo2.eval.metrics import (
    clean_prediction,
    count_scores,
    extract_points,
    extract_timed_points,
    normalize_vqa_answer,
    point_in_mask,
    pointing_scores,
    video_pointing_scores,
    vqa_score,
)


def box(x0: int, x1: int, y0: int, y1: int, size: tuple[int, int] = (20, 40)) -> np.ndarray:
    """A bool [H, W] mask, True on columns x0..x1 and rows y0..y1 (inclusive)."""
    mask = np.zeros(size, dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def test_points_are_read_from_every_format():
    assert extract_points('<points coords="1 1 100 200 2 300 400">cats</points>', 200, 100) == [(20, 20), (60, 40)]
    assert extract_timed_points('<points coords="0.5 1 100 200;1.0 2 300 400">x</points>', 10, 10) == [
        (0.5, 1, 2),
        (1.0, 3, 4),
    ]
    assert extract_timed_points('<points coords="0.5 1 100 200\t1.0 2 300 400">x</points>', 10, 10)[1] == (1.0, 3, 4)
    assert extract_points('<points coords="1 1 1200 200 2 500 500">x</points>', 10, 10) == [(5, 5)]  # x > width
    assert extract_points("Click(50.0, 25.0)", 200, 100) == [(100, 25)]  # percent
    assert extract_points('<point x="10.0" y="20.0" alt="x">x</point>', 200, 100) == [(20, 20)]  # Molmo v1
    assert extract_points("1 500 250", 200, 100) == [(100, 25)]  # bare triple, per mille
    assert extract_points("There are none.", 200, 100) == []


def test_a_point_rounds_half_to_even_into_the_mask():
    mask = box(2, 2, 0, 0)
    assert point_in_mask(2.5, 0, mask)  # round(2.5) == 2
    assert not point_in_mask(3.5, 0, box(3, 3, 0, 0))  # round(3.5) == 4
    assert not point_in_mask(-0.6, 0, box(0, 0, 0, 0))  # round(-0.6) == -1: outside the image


def test_pointing_precision_recall_f1():
    masks = [box(8, 12, 8, 12), box(28, 32, 8, 12)]
    gt = [(10, 10), (30, 10)]
    answer = '<points coords="1 1 275 500 2 725 500 3 975 975">x</points>'  # (11, 10), (29, 10), (39, 19.5)
    scores = pointing_scores(answer, gt, masks, (40, 20))
    # two hits of three predictions, both objects found: f1 = 2 * 2/3 * 1 / (2/3 + 1 + 1e-10)
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    one_found = pointing_scores('<points coords="1 1 275 500">x</points>', gt, masks, (40, 20))
    assert one_found == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})


def test_matching_minimises_total_distance_not_each_nearest():
    """P1 (6, 0) is nearer G2 (10, 0) than G1 (0, 0), but P1-G1 + P2-G2 = 6 + 2 beats P1-G2 + P2-G1 = 4 + 12."""
    masks = [box(0, 7, 0, 0, (1, 20)), box(8, 14, 0, 0, (1, 20))]
    answer = '<points coords="1 1 300 000 2 600 000">x</points>'  # (6, 0), (12, 0) on a 20 x 1 image
    assert pointing_scores(answer, [(0, 0), (10, 0)], masks, (20, 1))["f1"] == pytest.approx(1.0)


def test_pointing_without_points():
    masks = [box(8, 12, 8, 12)]
    assert pointing_scores("There are none.", np.zeros((0, 2)), [], (40, 20))["f1"] == 1.0
    assert pointing_scores('<points coords="1 1 275 500">x</points>', [], [], (40, 20))["precision"] == 0.0
    assert pointing_scores("There are none.", [(10, 10)], masks, (40, 20))["recall"] == 0.0
    with pytest.raises(ValueError, match="one mask per point"):
        pointing_scores("", [(10, 10), (30, 10)], masks, (40, 20))


def test_counting_counts_the_points_written():
    answer = 'Counting the <points coords="1 1 100 100 2 200 200">x</points> shows a total of 5.'
    assert count_scores(answer, 2) == {"correct": 1.0, "close": 1.0, "valid": 1.0}  # 2 points, "5" is ignored
    assert count_scores(answer, 5) == {"correct": 0.0, "close": 0.0, "valid": 1.0}
    assert count_scores("3", 3) == {"correct": 0.0, "close": 0.0, "valid": 1.0}  # no points: counts 0
    assert count_scores("There are none.", 0)["correct"] == 1.0
    assert count_scores("There are none.", 1) == {"correct": 0.0, "close": 1.0, "valid": 1.0}  # one too few
    assert count_scores(answer, 1) == {"correct": 0.0, "close": 1.0, "valid": 1.0}  # one too many
    assert count_scores(answer, 4)["close"] == 0.0  # two too few
    # lower-cased first, so the "Click(x, y)" pattern never matches, but the later "(x, y)" one does
    assert count_scores("Click(10.0, 10.0) Click(20.0, 20.0)", 2)["correct"] == 1.0


def test_vqa_normalisation():
    assert normalize_vqa_answer("The Two Dogs.") == "2 dogs"
    assert normalize_vqa_answer("dont") == "don't"
    assert normalize_vqa_answer("3.5") == "3.5"  # a period before a digit stays
    assert normalize_vqa_answer("yes!") == "yes"
    assert normalize_vqa_answer("ab/cd e/ f") == "abcd e f"  # "/ " occurs: every "/" is removed, not spaced
    assert normalize_vqa_answer("ab/cd") == "ab cd"
    assert normalize_vqa_answer("1,000") == "1000"
    assert normalize_vqa_answer("." * 33) == "."  # at most 32 periods go


def test_vqa_prediction_cleaning():
    assert clean_prediction("It is two.  Answer: Two ") == "Two"
    assert clean_prediction("cat\ndog\n dog ") == "dog"  # the most frequent line
    assert clean_prediction("cat\ndog") == "cat"  # a tie: the first
    assert clean_prediction("  a   red  cat ") == "a red cat"


def test_vqa_soft_score():
    answers = ["2", "2", "two", "3", "4", "2 dogs", "2", "two", "3", "2"]
    assert vqa_score("Two", answers) == 1.0  # 7 matches, capped at 3
    assert vqa_score("3.", answers) == pytest.approx(2 / 3)
    assert vqa_score("4", answers) == pytest.approx(1 / 3)
    assert vqa_score("5", answers) == 0.0
    assert vqa_score("yes", ["Yes"]) == pytest.approx(1 / 3)  # one answer: at most 1/3


def test_video_points_need_a_mask_at_the_predicted_time():
    size = (40, 20)
    gt = [(1.0, 10, 10), (2.0, 30, 10)]
    masks = [{1.0: box(8, 12, 8, 12)}, {2.0: box(28, 32, 8, 12), 2.5: box(30, 34, 8, 12)}]
    both = '<points coords="1.0 1 250 500;2.0 2 750 500">x</points>'
    assert video_pointing_scores(both, gt, masks, size, 10.0)["f1"] == pytest.approx(1.0)
    later = '<points coords="1.0 1 250 500;2.5 2 800 500">x</points>'  # (32, 10) at 2.5 s: the tubelet holds it
    assert video_pointing_scores(later, gt, masks, size, 10.0)["f1"] == pytest.approx(1.0)
    off_time = '<points coords="1.5 1 250 500;2.0 2 750 500">x</points>'  # no mask of point 1 at 1.5 s
    assert video_pointing_scores(off_time, gt, masks, size, 10.0) == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    )
    assert video_pointing_scores("There are none.", [], [], size, 10.0)["f1"] == 1.0
