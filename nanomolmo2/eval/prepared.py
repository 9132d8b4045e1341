"""Evaluation on a prepared held-out folder (`nanomolmo2 prepare`'s JSONL of PixMo-Points, PixMo-Count, VQA tables):
questions -> answers -> Molmo2's metrics (metrics.py).

Every image row of every dataset file in the folder is asked, per kind, up to `per_kind` of its annotations (taken
in turn, so that across rows every annotation is asked), with the prompts training uses:

    pointing   POINT_PROMPT        point_precision / point_recall / point_f1   (Molmo2's PointingEval)
    counting   COUNT_PROMPT        count_accuracy / count_within_one          (PointCountEval: points counted)
    vqa        the question        vqa_accuracy                               (VQA v2's soft score)

Pointing without masks. PixMo ships points, not object masks, and PointingEval needs one mask per ground-truth
point. Here the mask of a ground-truth point is a disc around it of radius POINT_RADIUS x the image's shorter side
(5%: 19 px on a 378-px side; at least MIN_RADIUS px): a prediction matched to that point by the Hungarian assignment
is a hit when it falls in the disc. Discs of nearby points may overlap, as masks of one object shared by two points
do. A VQA row with one reference answer counts it as every annotator's, so its soft score is exact match after
VQA normalisation.

Rows with a video, several images or no image, and annotations of other kinds (captions, chat), are not asked; a
folder with nothing to ask is a UsageError that says what it holds. `blank=True` asks everything again with blank
images of the same sizes (`blank_*`): the gap shows the model looks.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from ..data.jsonl import jsonl_files, read_jsonl
from ..data.points import COUNT_PROMPT, POINT_PROMPT
from ..data.processor import Processor
from ..errors import UsageError
from ..models.nanomolmo2 import NanoMolmo2
from .generation import Request, generate_answers
from .metrics import count_scores, pointing_scores, vqa_score

log = logging.getLogger(__name__)
POINT_RADIUS, MIN_RADIUS = 0.05, 2.0
MAX_NEW_TOKENS = {"point": 192, "count": 192, "vqa": 32}
BLANK_COLOUR = (235, 235, 235)
TASKS = {"pointing": "point", "counting": "count", "vqa": "vqa"}  # annotation task -> kind of question


@dataclass
class Question:
    kind: str
    dataset: str
    request: Request
    annotation: dict
    size: tuple[int, int]  # (width, height) of the image


def disc_masks(points: list, width: int, height: int) -> list[np.ndarray]:
    """One bool [height, width] mask per ground-truth point: the disc of the module docstring's radius around it."""
    radius = max(MIN_RADIUS, POINT_RADIUS * min(width, height))
    ys, xs = np.mgrid[0:height, 0:width]
    return [(xs - x) ** 2 + (ys - y) ** 2 <= radius**2 for x, y in points]


def prompt_of(kind: str, annotation: dict) -> str:
    if kind == "point":
        return POINT_PROMPT.format(label=annotation["label"])
    if kind == "count":
        return COUNT_PROMPT.format(label=annotation["label"])
    return annotation["question"] + "".join(f"\n{'AB'[i]}. {o}" for i, o in enumerate(annotation.get("options", [])))


def questions(folder: Path, limit: int | None = None, per_kind: int = 2) -> tuple[list[Question], Counter]:
    """The questions of every dataset file in the folder (at most `limit` image rows of each), and what was not
    asked (rows and annotations by reason)."""
    asked, not_asked = [], Counter()
    for file in jsonl_files(folder):
        rows, _ = read_jsonl(file)
        used = 0
        for row in rows:
            data = row.data
            if "video" in data or "images" in data or "image" not in data:
                not_asked["rows without one image"] += 1
                continue
            if limit is not None and used >= limit:
                break
            try:
                image = row.media("image")[0]
                size = (int(data["width"]), int(data["height"]))
            except (ValueError, OSError, KeyError, TypeError) as e:
                log.warning("skipped %s: %s", row.source, e)
                not_asked["unusable rows"] += 1
                continue
            by_kind = defaultdict(list)
            for annotation in data.get("annotations", []):
                task = annotation.get("task") if isinstance(annotation, dict) else None
                if task in TASKS:
                    by_kind[TASKS[task]].append(annotation)
                else:
                    not_asked[f"{task} annotations"] += 1
            for kind, of_kind in by_kind.items():
                start = used % len(of_kind)  # row i starts at its i-th annotation of the kind
                for k in range(min(per_kind, len(of_kind))):
                    annotation = of_kind[(start + k) % len(of_kind)]
                    request = Request(prompt_of(kind, annotation), [image], max_new_tokens=MAX_NEW_TOKENS[kind])
                    asked.append(Question(kind, file.stem, request, annotation, size))
            used += 1
    return asked, not_asked


def score(question: Question, answer: str) -> dict[str, float]:
    annotation = question.annotation
    if question.kind == "point":
        points = [(float(x), float(y)) for x, y in annotation["points"]]
        masks = disc_masks(points, *question.size)
        return {f"point_{k}": v for k, v in pointing_scores(answer, points, masks, question.size).items()}
    if question.kind == "count":
        scores = count_scores(answer, int(annotation["count"]))
        return {"count_accuracy": scores["correct"], "count_within_one": scores["close"]}
    answers = annotation.get("answers") or [annotation["answer"]] * 10  # one reference: every annotator's answer
    return {"vqa_accuracy": vqa_score(answer, [str(a) for a in answers])}


def summarize(values: dict[str, list[float]], prefix: str = "") -> dict[str, float]:
    """Each metric's mean over its questions and its standard error std / sqrt(n)."""
    out = {}
    for name, v in values.items():
        out[prefix + name] = float(np.mean(v))
        out[f"{prefix}{name}_stderr"] = float(np.std(v) / np.sqrt(len(v)))
    return out


def answer_all(model: NanoMolmo2, processor: Processor, asked: list[Question], batch_size: int) -> list[str]:
    """Answers in question order, one kind at a time: a batch's length is its kind's longest answer."""
    answers = [""] * len(asked)
    for kind in dict.fromkeys(q.kind for q in asked):
        chosen = [i for i, q in enumerate(asked) if q.kind == kind]
        for i, answer in zip(chosen, generate_answers(model, processor, [asked[i].request for i in chosen], batch_size),
                             strict=True):  # fmt: skip
            answers[i] = answer
    return answers


def blank(question: Question) -> Question:
    image = PIL.Image.new("RGB", question.size, BLANK_COLOUR)
    request = Request(question.request.question, [image], max_new_tokens=question.request.max_new_tokens)
    return Question(question.kind, question.dataset, request, question.annotation, question.size)


def evaluate_prepared(
    model: NanoMolmo2,
    processor: Processor,
    folder: str | Path,
    limit: int | None = None,
    blank_images: bool = True,
    batch_size: int = 32,
    per_kind: int = 2,
) -> tuple[dict[str, float], list[dict]]:
    """Metrics (means with standard errors, overall and per dataset as `<dataset>/<metric>`) and one record per
    question. Raises UsageError when the folder holds nothing to ask."""
    folder = Path(folder)
    asked, not_asked = questions(folder, limit, per_kind)
    if not asked:
        held = ", ".join(f"{n} {reason}" for reason, n in not_asked.most_common()) or "no rows"
        raise UsageError(
            f"nothing to evaluate in {folder}: no image rows with pointing, counting or vqa annotations ({held})"
        )
    model.eval()
    overall, per_dataset, records = defaultdict(list), defaultdict(list), []
    for question, answer in zip(asked, answer_all(model, processor, asked, batch_size), strict=True):
        scores = score(question, answer)
        for name, value in scores.items():
            overall[name].append(value)
            per_dataset[f"{question.dataset}/{name}"].append(value)
        records.append({"dataset": question.dataset, "kind": question.kind, "question": question.request.question,
                        "answer": answer, **scores})  # fmt: skip
    metrics = summarize(overall) | summarize(per_dataset)
    if blank_images:
        blanked = [blank(q) for q in asked]
        values = defaultdict(list)
        for question, answer in zip(asked, answer_all(model, processor, blanked, batch_size), strict=True):
            for name, value in score(question, answer).items():
                values[name].append(value)
        metrics |= summarize(values, "blank_")
    metrics["questions"] = float(len(asked))
    return metrics, records
