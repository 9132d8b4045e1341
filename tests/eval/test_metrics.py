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


# -----------------------------------------------------------------------------
# edges a mutation run found untested (docs/TESTING.md)


def test_points_on_the_image_border_count_and_a_bad_group_skips_only_itself():
    assert extract_timed_points('<points coords="1 1 000 000 2 1000 1000">x</points>', 10, 20) == [
        (1.0, 0, 0),
        (1.0, 10, 20),
    ]
    assert extract_timed_points('<points coords="1.2.3 1 100 200;2.0 1 300 400">x</points>', 10, 10) == [(2.0, 3, 4)]
    # read as <points>, not by the legacy "N xxx yyy" pattern, which cannot read 1000
    assert extract_points('<points coords="1 1 1000 500">x</points>', 10, 10) == [(10, 5)]


def test_legacy_points_up_to_their_scale_and_per_mille_pairs():
    assert extract_points("Click(100.0, 50.0)", 200, 100) == [(200, 50)]  # 100 % is still in the image
    assert extract_points("Click(100.1, 50.0)", 200, 100) == []
    points = extract_points("p=512,301 and 2 = 100, 999", 200, 100)  # per mille of the width and height
    assert np.allclose(points, [(102.4, 30.1), (20.0, 99.9)])


def test_a_point_in_the_first_and_last_row_and_column_of_a_wide_mask():
    mask = np.ones((2, 5), dtype=bool)
    assert point_in_mask(0, 0, mask) and point_in_mask(4, 1, mask)
    assert not point_in_mask(5, 0, mask) and not point_in_mask(0, 2, mask) and not point_in_mask(0, 3, mask)


def test_scores_with_nothing_predicted_or_nothing_to_find_are_whole_dicts():
    masks = [box(8, 12, 8, 12)]
    none = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert pointing_scores("There are none.", [(10, 10)], masks, (40, 20)) == none
    assert pointing_scores('<points coords="1 1 275 500">x</points>', [], [], (40, 20)) == none
    assert pointing_scores("There are none.", [], [], (40, 20)) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # Molmo2's 1e-10 in the denominator: a perfect answer scores just under 1
    perfect = pointing_scores('<points coords="1 1 250 500">x</points>', [(10, 10)], masks, (40, 20))
    assert perfect["f1"] == 2 / (2 + 1e-10) and perfect["f1"] < 1.0


def test_video_matching_weighs_time_and_space_on_the_0_to_100_scale():
    """Ten seconds, 100 px wide: one second weighs as much as 10 px."""
    size, duration = (100, 20), 10.0

    def tube(x0: int, x1: int, *times: float) -> dict[float, np.ndarray]:
        return {t: box(x0, x1, 0, 19, (20, 100)) for t in times}

    # same place, two times: only time tells the points apart (answers listed in the other order)
    gt, masks = [(1.0, 50, 10), (2.0, 50, 10)], [tube(49, 51, 1.0), tube(49, 51, 2.0)]
    answer = '<points coords="2.0 1 500 500;1.0 2 500 500">x</points>'
    assert video_pointing_scores(answer, gt, masks, size, duration)["f1"] == pytest.approx(1.0)
    # near in space, half a second apart (5 units): space decides
    gt, masks = [(1.0, 10, 10), (1.5, 90, 10)], [tube(8, 13, 1.0, 1.5), tube(87, 92, 1.0, 1.5)]
    answer = '<points coords="1.0 1 880 500;1.5 2 120 500">x</points>'
    assert video_pointing_scores(answer, gt, masks, size, duration)["f1"] == pytest.approx(1.0)
    # 2 px apart, 2 s apart (20 units): time decides
    gt, masks = [(1.0, 50, 10), (3.0, 52, 10)], [tube(50, 52, 1.0), tube(50, 52, 3.0)]
    answer = '<points coords="3.0 1 500 500;1.0 2 520 500">x</points>'
    assert video_pointing_scores(answer, gt, masks, size, duration)["f1"] == pytest.approx(1.0)
    # the same down the frame (100 px high)
    gt = [(1.0, 10, 50), (3.0, 10, 52)]
    masks = [{1.0: box(0, 19, 50, 52, (100, 20))}, {3.0: box(0, 19, 50, 52, (100, 20))}]
    answer = '<points coords="3.0 1 500 500;1.0 2 500 520">x</points>'
    assert video_pointing_scores(answer, gt, masks, (20, 100), duration)["f1"] == pytest.approx(1.0)


def test_video_matching_rounds_to_a_tenth_not_to_a_unit():
    """On 1,000 px and 100 s, 500 px / 504 px and 10.0 s / 10.4 s are 50.0 / 50.4 and 10.0 / 10.4 on the matching
    scale: apart at a tenth, a tie at a unit (which the answers' order would break the wrong way)."""
    size, duration = (1000, 1000), 100.0

    def at(x: int, y: int, t: float) -> dict[float, np.ndarray]:
        return {t: box(x - 1, x + 1, y - 1, y + 1, (1000, 1000))}

    for near, far in (((10.0, 504, 500), (10.0, 500, 500)), ((10.0, 500, 504), (10.0, 500, 500))):
        gt, masks = [near, far], [at(*near[1:], near[0]), at(*far[1:], far[0])]
        answer = f'<points coords="10.0 1 {far[1]} {far[2]} 2 {near[1]} {near[2]}">x</points>'
        assert video_pointing_scores(answer, gt, masks, size, duration)["f1"] == pytest.approx(1.0)
    gt, masks = [(10.0, 500, 500), (10.4, 500, 500)], [at(500, 500, 10.0), at(500, 500, 10.4)]
    answer = '<points coords="10.4 1 500 500;10.0 2 500 500">x</points>'
    assert video_pointing_scores(answer, gt, masks, size, duration)["f1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one mask per point"):
        video_pointing_scores("", gt, masks[:1], size, duration)
    assert video_pointing_scores("There are none.", gt, masks, size, duration)["recall"] == 0.0


def test_counting_reads_points_after_lower_casing():
    assert count_scores('<point x="10.0" y="20.0" alt="cat">cat</point>.', 1)["correct"] == 1.0  # Molmo v1


def test_vqa_normalisation_of_spacing_around_punctuation():
    assert normalize_vqa_answer("ab/cd\n/") == "abcd"  # the newline is a space: " /" occurs, so "/" goes
    assert normalize_vqa_answer("ab/cd\t/") == "abcd"
    assert normalize_vqa_answer("ab/cd /f") == "abcd f"
    assert normalize_vqa_answer("an apple a day") == "apple day"
    assert clean_prediction("a  red cat\nno\na red  cat") == "a red cat"
