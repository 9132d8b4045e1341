"""Evaluation of a prepared folder (nanomolmo2/eval/prepared.py): which questions a PixMo-shaped folder gives, how
answers are scored without masks (a disc around each ground-truth point), and a folder with nothing to ask."""

import json

import numpy as np
import PIL.Image
import pytest

from nanomolmo2.data.points import COUNT_PROMPT, POINT_PROMPT, format_points
from nanomolmo2.errors import UsageError
from nanomolmo2.eval.prepared import disc_masks, evaluate_prepared, questions, score


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "media").mkdir()
    PIL.Image.new("RGB", (200, 100)).save(tmp_path / "media" / "a.png")
    points = [[20.0, 30.0], [150.0, 60.0]]
    write(tmp_path / "pixmo-points.jsonl", [
        {"id": "p0", "image": "media/a.png", "width": 200, "height": 100, "annotations": [
            {"task": "pointing", "label": "cats", "points": points},
            {"task": "counting", "label": "dogs", "points": points, "count": 2},
            {"task": "caption", "caption": "Two cats."}]},
        {"id": "v0", "video": "media/clip.mp4", "annotations": [{"task": "counting", "label": "x", "points": []}]},
    ])  # fmt: skip
    write(tmp_path / "pixmo-ask-model-anything.jsonl", [
        {"id": f"q{i}", "image": "media/a.png", "width": 200, "height": 100,
         "annotations": [{"task": "vqa", "question": f"Q{i}?", "answer": "Two"}]} for i in range(3)
    ])  # fmt: skip
    return tmp_path


def test_questions_of_a_prepared_folder(folder):
    asked, not_asked = questions(folder)
    got = sorted((q.dataset, q.kind, q.request.question) for q in asked)
    assert got == sorted(
        [("pixmo-points", "point", POINT_PROMPT.format(label="cats")),
         ("pixmo-points", "count", COUNT_PROMPT.format(label="dogs"))]
        + [("pixmo-ask-model-anything", "vqa", f"Q{i}?") for i in range(3)]
    )  # fmt: skip
    assert not_asked == {"caption annotations": 1, "rows without one image": 1}
    assert {q.size for q in asked} == {(200, 100)} and all(q.request.images[0].is_file() for q in asked)
    assert len(questions(folder, limit=1)[0]) == 3  # one image row of each file


def asked(folder, kind: str, annotation: dict):
    """The question of a one-row folder whose 200 x 100 image has this annotation."""
    (folder / "media").mkdir(parents=True)
    PIL.Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(folder / "media" / "a.png")
    task = {"point": "pointing", "count": "counting", "vqa": "vqa"}[kind]
    write(folder / "d.jsonl", [{"id": "r", "image": "media/a.png", "width": 200, "height": 100,
                                "annotations": [{"task": task, **annotation}]}])  # fmt: skip
    (question,) = questions(folder)[0]
    return question


def test_disc_masks_and_scores_by_hand(tmp_path):
    masks = disc_masks([(20.0, 30.0)], 200, 100)  # radius 5% of 100 px = 5 px
    assert masks[0].shape == (100, 200) and masks[0][30, 25] and not masks[0][30, 26] and masks[0].sum() == 81
    assert disc_masks([(0.0, 0.0)], 10, 10)[0].sum() == 6  # the 2-px floor: a quarter disc of radius 2 in the corner

    point = asked(tmp_path / "p", "point", {"label": "cats", "points": [[20.0, 30.0], [150.0, 60.0]]})
    # one prediction 4 px from the first point (inside its disc), one 8 px from the second (outside)
    answer = format_points([(24.0, 30.0), (150.0, 68.0)], "cats", 200, 100)
    assert score(point, answer) == pytest.approx({"point_precision": 0.5, "point_recall": 0.5, "point_f1": 0.5})
    assert score(point, "There are none.")["point_f1"] == 0.0
    count = asked(tmp_path / "c", "count", {"label": "cats", "points": [[20.0, 30.0], [150.0, 60.0]], "count": 2})
    two = format_points([(10.0, 10.0), (100.0, 50.0)], "cats", 200, 100, style="point_count")
    assert score(count, two) == {"count_accuracy": 1.0, "count_within_one": 1.0}
    assert score(count, "2") == {"count_accuracy": 0.0, "count_within_one": 0.0}  # Molmo2 counts points, not words
    vqa = asked(tmp_path / "v", "vqa", {"question": "How many?", "answer": "Two"})
    assert score(vqa, "two.") == {"vqa_accuracy": 1.0} and score(vqa, "three") == {"vqa_accuracy": 0.0}


def test_a_folder_with_nothing_to_ask_says_why(tmp_path):
    write(tmp_path / "tulu-3-sft-mixture.jsonl", [
        {"id": "t", "annotations": [{"task": "chat", "messages": [{"role": "user", "content": "hi"}]}]}])  # fmt: skip
    with pytest.raises(UsageError, match=r"nothing to evaluate in .*: no image rows .* \(1 rows without one image\)"):
        evaluate_prepared(None, None, tmp_path)
