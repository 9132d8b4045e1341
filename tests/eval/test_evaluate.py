"""Scoring and generation on hand-made cases: where points land, counts either side, the top-p nucleus, batched
left-padded generation equal to one prompt at a time; standard errors, blank videos, questions taken in turn."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from nanomolmo2.data.processor import Processor
from nanomolmo2.eval.evaluate import (
    Query,
    blank_request,
    first_of_each_kind,
    image_queries,
    score,
    summarize,
    video_queries,
)
from nanomolmo2.eval.generation import Request, generate_answers
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config
from nanomolmo2.models.attention import build_attention_mask
from nanomolmo2.models.nanomolmo2 import _pick_token
from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.videos import write_shapesworld_videos
from tests.data.media import real_photos
from tests.models.reference import randomize


@pytest.fixture
def wide_scene(tmp_path: Path) -> tuple[dict, Path]:
    """A 100 x 50 label map with object 1 in the top-right corner (x 80..95, y 5..15)."""
    mask = np.zeros((50, 100), dtype=np.uint8)
    mask[5:16, 80:96] = 1
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    return {"width": 100, "height": 50, "masks": "mask.png"}, tmp_path


def test_points_are_scored_as_x_then_y_of_the_image(wide_scene):
    row, root = wide_scene
    query = Query("point", Request("Point to it"), truth=[(87.0, 10.0)], row=row, root=root)
    # 0..1000 coordinates: x = 870 -> 87 px of 100, y = 200 -> 10 px of 50
    assert score(query, '<points coords="1 1 870 200">it</points>')["point_f1"] == pytest.approx(1.0)  # 1e-10 in F1
    assert score(query, '<points coords="1 1 200 870">it</points>')["point_f1"] == 0.0  # x and y swapped
    assert score(query, '<points coords="1 1 870 600">it</points>')["point_f1"] == 0.0  # below the object
    assert score(query, "There are none.")["point_recall"] == 0.0


def test_count_query_counts_the_points_written():
    """Molmo2's PointCountEval: the number of points, not the number the answer states."""
    query = Query("count", Request("How many?"), truth=3)
    three = '<points coords="1 1 100 100 2 200 200 3 300 300">x</points>'
    assert score(query, f"Counting the {three} shows a total of 3.") == {"count_accuracy": 1.0, "count_within_one": 1.0}
    assert score(query, f"Counting the {three} shows a total of 4.")["count_accuracy"] == 1.0
    assert score(query, "3") == {"count_accuracy": 0.0, "count_within_one": 0.0}
    assert score(Query("count", Request("How many?"), truth=1), "There are none.") == {
        "count_accuracy": 0.0,
        "count_within_one": 1.0,
    }


def sample_counts(probs: list[float], top_p: float, draws: int = 4000) -> np.ndarray:
    logits = torch.log(torch.tensor([probs] * draws))
    generator = torch.Generator().manual_seed(0)
    tokens = _pick_token(logits, temperature=1.0, top_p=top_p, generator=generator)
    return np.bincount(tokens.numpy(), minlength=len(probs)) / draws


def test_top_p_keeps_the_smallest_nucleus_and_renormalises():
    probs = [0.5, 0.3, 0.15, 0.05]
    freq = sample_counts(probs, top_p=0.6)  # 0.5 < 0.6 <= 0.8: tokens 0 and 1
    assert freq[2] == 0 and freq[3] == 0
    assert freq[0] == pytest.approx(0.5 / 0.8, abs=0.04)
    freq = sample_counts(probs, top_p=0.9)  # 0.8 < 0.9 <= 0.95: tokens 0, 1, 2
    assert freq[3] == 0 and freq[2] == pytest.approx(0.15 / 0.95, abs=0.03)
    freq = sample_counts(probs, top_p=0.4)  # the top token alone reaches it
    assert freq[0] == 1.0
    assert (sample_counts(probs, top_p=1.0) > 0).all()


def test_greedy_is_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 2.9, 0.0]])
    assert _pick_token(logits, temperature=0.0, top_p=0.9, generator=None).tolist() == [1, 0]


def test_every_query_attends_to_itself_even_when_padded():
    """A left-padded query row has no real key before it: the mask still lets it see itself (no NaN rows)."""
    padding = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask = build_attention_mask(5, 5, attention_mask=padding)[:, 0]  # [B, q, k]
    assert mask.diagonal(dim1=1, dim2=2).all()
    assert mask[0, 0].tolist() == [True, False, False, False, False]
    assert mask[0, 1].tolist() == [False, True, False, False, False]
    assert mask[0, 3].tolist() == [False, False, True, True, False]  # real tokens never see the padding


def test_batched_left_padded_generation_equals_one_prompt_at_a_time():
    config = NanoMolmo2Config.tiny()
    config.vision.image_size, config.vision.max_crops, config.vision.overlap_margins = 56, 2, (1, 1)
    torch.manual_seed(0)
    model = randomize(NanoMolmo2(config)).eval()
    processor = Processor.for_model(config)
    photos = real_photos()
    requests = [
        Request("What is this?", [photos["chelsea"]], max_new_tokens=6),
        Request("Describe the picture in a few words, please.", [photos["china"]], max_new_tokens=6),
        Request("Hello?", [], max_new_tokens=6),
        Request("Compare them.", [photos["rocket"], photos["coffee"]], max_new_tokens=6),
    ]
    batched = generate_answers(model, processor, requests, batch_size=4)
    alone = [generate_answers(model, processor, [r], batch_size=1)[0] for r in requests]
    assert batched == alone
    assert len(set(alone)) > 1  # the answers depend on the prompt (a constant answer would prove nothing)
    assert json.dumps(batched)  # plain strings


def test_standard_errors_are_the_binomial_and_the_sample_formulas():
    metrics = summarize({"vqa_accuracy": [1.0, 0.0, 1.0, 1.0], "point_f1": [0.5, 1.0, 0.0]}, "blank_")
    assert metrics["blank_vqa_accuracy"] == 0.75
    assert metrics["blank_vqa_accuracy_stderr"] == pytest.approx((0.75 * 0.25 / 4) ** 0.5)  # sqrt(p (1 - p) / n)
    assert metrics["blank_point_f1_stderr"] == pytest.approx((0.5 / 3) ** 0.5 / 3**0.5)  # std 0.408.. / sqrt(3)


def test_blank_video_has_the_frames_times_and_size_of_the_real_one():
    frames = np.random.default_rng(0).integers(0, 255, (5, 12, 16, 3), dtype=np.uint8)
    blank = blank_request(Request("What colour?", video=(frames, [0.0, 0.5, 1.0, 1.5, 2.0])))
    blank_frames, times = blank.video
    assert blank_frames.shape == frames.shape and blank_frames.dtype == np.uint8 and times == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert len(np.unique(blank_frames.reshape(-1, 3), axis=0)) == 1  # one colour, nothing on it
    assert blank.question == "What colour?" and blank.max_new_tokens == 64


def test_rows_take_their_questions_in_turn(tmp_path):
    write_shapesworld(tmp_path, 12, seed=0, image_size=56)
    write_shapesworld_videos(tmp_path, 8, seed=0, image_size=56)
    images = [q for q in image_queries(tmp_path, per_kind=1) if q.kind == "vqa"]
    firsts = [next(a for a in q.row["annotations"] if a["task"] == "vqa")["question"] for q in images]
    assert len(images) == 12 and sum(q.request.question != f for q, f in zip(images, firsts, strict=True)) >= 6
    videos = [q for q in video_queries(tmp_path, 16, per_kind=1) if q.kind == "video_qa"]
    assert len({q.request.question.split(" the ")[0] for q in videos}) >= 3  # several kinds of question, not one


def test_blank_variants_of_the_first_queries_of_each_kind():
    queries = [Query(kind, Request(f"{kind} {i}"), None, {}, None) for i in range(4) for kind in ("vqa", "point")]
    kept = first_of_each_kind(queries, 3)
    assert [(q.kind, q.request.question) for q in kept] == [
        ("vqa", "vqa 0"), ("point", "point 0"), ("vqa", "vqa 1"), ("point", "point 1"), ("vqa", "vqa 2"),
        ("point", "point 2"),
    ]  # fmt: skip
    assert first_of_each_kind(queries, None) == queries


def timed_point(t: float, x: float, y: float, k: int, row: dict) -> str:
    """One video point as an answer writes it: time, index, x and y on the 0..1000 scale."""
    return f"{t:.1f} {k} {round(x / row['width'] * 1000)} {round(y / row['height'] * 1000)}"


def test_a_video_point_hits_its_object_in_any_frame_shown_where_it_is_visible(tmp_path):
    """ShapesWorld's video masks as Molmo2-VideoPoint's: one point per object, a hit anywhere along its track."""
    write_shapesworld_videos(tmp_path, 12, seed=0, image_size=112)
    queries = [q for q in video_queries(tmp_path, 16, per_kind=4) if q.kind == "video_point" and q.truth]
    checked = 0
    for query in queries:
        row = query.row
        masks = np.load(tmp_path / row["masks"])["masks"]
        truth = ";".join(timed_point(t, x, y, k + 1, row) for k, (t, x, y) in enumerate(query.truth))
        assert score(query, f'<points coords="{truth}">x</points>')["video_point_f1"] == pytest.approx(1.0)
        if len(query.truth) > 1:
            continue
        ((t, x, y),) = query.truth
        object_id = masks[int(round(t * row["fps"])), int(round(y)), int(round(x))]
        for later in query.request.video[1]:  # the object at another time shown: a hit where it is visible, else a miss
            if later == t:
                continue
            ys, xs = np.nonzero(masks[int(round(later * row["fps"]))] == object_id)
            if len(xs):
                answer = f'<points coords="{timed_point(later, xs[len(xs) // 2], ys[len(xs) // 2], 1, row)}">x</points>'
                assert score(query, answer)["video_point_f1"] == pytest.approx(1.0)
                checked += 1
            else:
                answer = f'<points coords="{timed_point(later, x, y, 1, row)}">x</points>'
                assert score(query, answer)["video_point_f1"] == 0.0
    assert checked >= 10
