"""Evaluation on a held-out folder with masks (ShapesWorld's format): questions -> answers -> metrics.

For every image: its caption, VQA, counting and pointing annotations become questions (Molmo2's prompts);
for every video: its VQA and pointing annotations; text-only rows: their chat turn. Answers are generated
greedily in batches and scored with metrics.py:

    caption_accuracy   the set of (colour, shape) the caption names == the objects in the image
    vqa_accuracy       VQA v2 score (normalised exact match)   count_accuracy   points in the answer (also ±1)
    point_f1           Hungarian-matched points inside masks  text_accuracy    as vqa_accuracy
    video_qa_accuracy, video_point_f1 (a hit: inside the object's mask in the frame of the predicted time)

Each metric comes with its standard error over the queries (`<metric>_stderr`). `blank=True` asks everything
again with every image, and every video frame, blank: the gap to the real score shows the model looks.
Each row is asked `per_kind` questions of each kind, taken in turn from its annotations (row i starts at its i-th),
so that every kind of question is asked across the rows.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from ..data.datasets import CAPTION_PROMPTS
from ..data.jsonl import jsonl_files, read_jsonl, resolve_media
from ..data.points import COUNT_PROMPT, POINT_PROMPT, VIDEO_POINT_PROMPT
from ..data.processor import Processor
from ..data.video_io import load_video
from ..models.nanomolmo2 import NanoMolmo2
from ..shapesworld.tasks import parse_caption
from .generation import Request, generate_answers
from .metrics import count_scores, pointing_scores, video_pointing_scores, vqa_score

log = logging.getLogger(__name__)
BLANK_COLOUR = (235, 235, 235)  # a light grey like ShapesWorld's backgrounds, with nothing on it
# The longest answer each kind may generate (tokens): a little over the longest ShapesWorld answer of the kind, so
# that a model that does not stop costs little (a longer answer is cut, not dropped).
MAX_NEW_TOKENS = {"caption": 48, "vqa": 8, "count": 72, "point": 72, "text": 16, "video_qa": 10, "video_point": 72}
IMAGE_KINDS, VIDEO_KINDS = ("caption", "vqa", "count", "point"), ("video_qa", "video_point")


@dataclass
class Query:
    kind: str
    request: Request
    truth: object
    row: dict = field(default_factory=dict)
    root: Path = Path(".")


def _rows(folder: Path, name: str, media: str | None = None) -> list[tuple[dict, Path, list[Path]]]:
    """(row, its folder, the paths of its `media` key) for the rows of the folder's `name` file. Read like training
    data (data/jsonl.py): a malformed line, or media outside the folder or no regular file, is reported and skipped."""
    rows = []
    for file in jsonl_files(folder):
        for row in read_jsonl(file)[0] if file.name == name else []:
            try:
                rows.append((row.data, row.root, row.media(media) if media else []))
            except (ValueError, OSError) as e:
                log.warning("skipped %s: %s", row.source, e)
    return rows


def rotate(annotations: list[dict], index: int, n: int) -> list[dict]:
    """n of a row's annotations of one kind, starting at the row's index: across rows every question is asked,
    not only each row's first ones."""
    if not annotations:
        return []
    return [annotations[(index + k) % len(annotations)] for k in range(min(n, len(annotations)))]


def question_text(annotation: dict) -> str:
    return annotation["question"] + "".join(f"\n{'AB'[i]}. {o}" for i, o in enumerate(annotation.get("options", [])))


def image_queries(folder: Path, limit: int | None = None, per_kind: int = 2) -> list[Query]:
    queries = []
    for index, (row, root, (image, *_)) in enumerate(_rows(folder, "images.jsonl", "image")[:limit]):
        kinds = defaultdict(list)
        for annotation in row["annotations"]:
            kinds[annotation["task"]].append(annotation)
        truth = {(o["colour"], o["shape"]) for o in row["objects"]}
        request = Request(CAPTION_PROMPTS[0], [image], max_new_tokens=MAX_NEW_TOKENS["caption"])
        queries.append(Query("caption", request, truth, row, root))
        for a in rotate(kinds["vqa"], index, per_kind):
            request = Request(question_text(a), [image], max_new_tokens=MAX_NEW_TOKENS["vqa"])
            queries.append(Query("vqa", request, a["answer"], row, root))
        for a in rotate(kinds["counting"], index, per_kind):
            request = Request(COUNT_PROMPT.format(label=a["label"]), [image], max_new_tokens=MAX_NEW_TOKENS["count"])
            queries.append(Query("count", request, a["count"], row, root))
        for a in rotate(kinds["pointing"], index, per_kind):
            request = Request(POINT_PROMPT.format(label=a["label"]), [image], max_new_tokens=MAX_NEW_TOKENS["point"])
            queries.append(Query("point", request, a["points"], row, root))
    return queries


def video_queries(folder: Path, max_frames: int, limit: int | None = None, per_kind: int = 2) -> list[Query]:
    queries = []
    for index, (row, root, (path, *_)) in enumerate(_rows(folder, "videos.jsonl", "video")[:limit]):
        video = load_video(path, max_frames=max_frames)
        vqa = rotate([a for a in row["annotations"] if a["task"] == "vqa"], index, per_kind)
        pointing = rotate([a for a in row["annotations"] if a["task"] == "pointing"], index, per_kind)
        for a in vqa:
            request = Request(question_text(a), video=video, max_new_tokens=MAX_NEW_TOKENS["video_qa"])
            queries.append(Query("video_qa", request, a["answer"], row, root))
        for a in pointing:
            prompt = VIDEO_POINT_PROMPT.format(label=a["label"])
            request = Request(prompt, video=video, max_new_tokens=MAX_NEW_TOKENS["video_point"])
            queries.append(Query("video_point", request, a["points"], row, root))
    return queries


def text_queries(folder: Path, limit: int | None = None) -> list[Query]:
    queries = []
    for row, root, _ in _rows(folder, "text.jsonl")[:limit]:
        messages = row["annotations"][0]["messages"]
        request = Request(messages[0]["content"], max_new_tokens=MAX_NEW_TOKENS["text"])
        queries.append(Query("text", request, messages[1]["content"], row, root))
    return queries


def _object_mask(label_map: np.ndarray, x: float, y: float) -> np.ndarray:
    """The bool mask of the object under a ground-truth point (each point is its object's centre)."""
    return label_map == label_map[int(round(y)), int(round(x))]


def score(query: Query, answer: str) -> dict[str, float]:
    """The metric values of one answer with Molmo2's per-example metrics (a dict, since pointing gives precision,
    recall and F1). ShapesWorld has one reference answer per question, scored as VQA v2's ten identical answers."""
    if query.kind == "caption":
        return {"caption_accuracy": float(parse_caption(answer) == query.truth)}
    if query.kind in ("vqa", "video_qa", "text"):
        name = {"vqa": "vqa_accuracy", "video_qa": "video_qa_accuracy", "text": "text_accuracy"}[query.kind]
        return {name: vqa_score(answer, [str(query.truth)] * 10)}
    if query.kind == "count":
        scores = count_scores(answer, query.truth)
        return {"count_accuracy": scores["correct"], "count_within_one": scores["close"]}
    width, height = query.row["width"], query.row["height"]
    if query.kind == "point":
        label_map = np.array(PIL.Image.open(resolve_media(query.root, query.row["masks"])))
        masks = [_object_mask(label_map, x, y) for x, y in query.truth]
        scores = pointing_scores(answer, query.truth, masks, (width, height))
        return {f"point_{k}": v for k, v in scores.items()}
    stored = np.load(resolve_media(query.root, query.row["masks"]))
    label_maps, times = stored["masks"], np.asarray(stored["times"])

    def label_map(t: float) -> np.ndarray:  # the frame nearest to time t
        return label_maps[int(np.argmin(np.abs(times - t)))]

    # As Molmo2-VideoPoint's masks: a ground-truth point (one per object) has its object's mask in every frame the
    # model was shown where the object is visible, so pointing at the object at any of those times is a hit.
    shown = [round(float(t), 1) for t in query.request.video[1]]
    masks = []
    for t, x, y in query.truth:
        label = label_map(t)[int(round(y)), int(round(x))]
        masks.append({s: mask for s in shown if (mask := label_map(s) == label).any()})
    scores = video_pointing_scores(answer, query.truth, masks, (width, height), query.row["duration"])
    return {f"video_point_{k}": v for k, v in scores.items()}


def blank_request(request: Request) -> Request:
    """The same question with every image, or every video frame, blank (same sizes, same frame times)."""
    images = [PIL.Image.new("RGB", PIL.Image.open(p).size, BLANK_COLOUR) for p in request.images]
    video = request.video
    if video is not None:
        frames, times = video
        video = (np.broadcast_to(np.array(BLANK_COLOUR, dtype=frames.dtype), frames.shape), times)
    return Request(request.question, images, video, request.max_new_tokens)


def answer_all(model: NanoMolmo2, processor: Processor, queries: list[Query], batch_size: int) -> list[str]:
    """Answers in query order, generated one kind at a time: a batch's length is its own kind's longest answer."""
    answers = [""] * len(queries)
    for kind in dict.fromkeys(q.kind for q in queries):
        chosen = [i for i, q in enumerate(queries) if q.kind == kind]
        generated = generate_answers(model, processor, [queries[i].request for i in chosen], batch_size)
        for i, answer in zip(chosen, generated, strict=True):
            answers[i] = answer
    return answers


def summarize(values: dict[str, list[float]], prefix: str = "") -> dict[str, float]:
    """Each metric's mean over its queries and its standard error, std / sqrt(n) (sqrt(p (1 - p) / n) for 0/1
    accuracies)."""
    out = {}
    for name, v in values.items():
        out[prefix + name] = float(np.mean(v))
        out[f"{prefix}{name}_stderr"] = float(np.std(v) / np.sqrt(len(v)))
    return out


def first_of_each_kind(queries: list[Query], limit: int | None) -> list[Query]:
    """The first `limit` queries of each kind, in their order (all of them when limit is None)."""
    taken = Counter()
    kept = []
    for query in queries:
        taken[query.kind] += 1
        if limit is None or taken[query.kind] <= limit:
            kept.append(query)
    return kept


def evaluate(
    model: NanoMolmo2,
    processor: Processor,
    folder: str | Path,
    limit: int | None = None,
    max_frames: int = 16,
    blank: bool = True,
    batch_size: int = 32,
    per_kind: int = 2,
    blank_limit: int | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Metrics (means over queries, with their standard errors) and the per-query records; with `blank`, the image
    and video metrics again with blank images and blank frames (`blank_*`): the gap shows the model looks.
    blank_limit: ask the blank variants of the first `blank_limit` queries of each kind only (None: of all)."""
    folder = Path(folder)
    queries = image_queries(folder, limit, per_kind) + text_queries(folder, limit)
    if any(f.name == "videos.jsonl" for f in jsonl_files(folder)):
        queries += video_queries(folder, max_frames, limit, per_kind)
    model.eval()
    values, records = defaultdict(list), []
    for query, answer in zip(queries, answer_all(model, processor, queries, batch_size), strict=True):
        scores = score(query, answer)
        for k, v in scores.items():
            values[k].append(v)
        records.append({"kind": query.kind, "question": query.request.question, "answer": answer, **scores})
    metrics = summarize(values)
    if blank:
        seeing = first_of_each_kind([q for q in queries if q.kind in IMAGE_KINDS + VIDEO_KINDS], blank_limit)
        blanked = [Query(q.kind, blank_request(q.request), q.truth, q.row, q.root) for q in seeing]
        blank_values = defaultdict(list)
        for query, answer in zip(seeing, answer_all(model, processor, blanked, batch_size), strict=True):
            for k, v in score(query, answer).items():
                blank_values[k].append(v)
        metrics.update(summarize(blank_values, "blank_"))
    return metrics, records
