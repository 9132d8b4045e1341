"""Molmo2's evaluation metrics for one example each, as its evaluators compute them (docs/MOLMO2.md, Metrics).

Sources in allenai/molmo2: olmo/eval/evaluators.py (PointingEval, PointCountEval, VqaEval, VixMoPointEval),
olmo/eval/vqa.py (vqa_score and its answer normalisation) and olmo/preprocessing/point_formatter.py
(extract_points). A dataset's score is the plain mean of these per-example values.

- pointing_scores: points parsed from the answer are matched one-to-one to the ground-truth points by pixel
  distance (Hungarian, scipy's linear_sum_assignment); a matched prediction is a hit when it lies in that
  ground-truth point's mask. precision = hits / predictions, recall = hits / ground-truth points.
- video_pointing_scores: the same in (time, x, y), each scaled to 0..100, with one mask per point and time.
- count_scores: the number of points in the answer (not the number it states) against the true count.
- vqa_score: VQA v2's soft score min(matches / 3, 1) after VQA normalisation of both sides.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

# -----------------------------------------------------------------------------
# parsing points out of an answer (point_formatter.py: UnifiedPointFormatter, then LegacyPointFormatting)

_COORDS = re.compile(r"<(?:points|tracks).*? coords=\"([0-9\t:;, .]+)\"/?>")
_GROUP = re.compile(r"(?:^|\t|:|,|;)([0-9\.]+) ([0-9\. ]+)")  # one image or frame: its id/time, then triples
_TRIPLE = re.compile(r"([0-9]+) ([0-9]{3,4}) ([0-9]{3,4})")  # index, x, y on a 0..1000 scale
# Older formats, tried in this order when the answer has no <points coords=...>: (regex, scale, early return)
_LEGACY = (
    (re.compile(r"Click\(([0-9]+\.[0-9]), ?([0-9]+\.[0-9])\)"), 100.0, True),
    (re.compile(r"[0-9]+ ([0-9]{3}) ([0-9]{3})"), 1000.0, True),
    (re.compile(r"[0-9]+ ([0-9]+\.[0-9]) ([0-9]+\.[0-9])"), 100.0, True),
    (re.compile(r"\(([0-9]+\.[0-9]),? ?([0-9]+\.[0-9])\)"), 100.0, False),
    (re.compile(r'x\d*="\s*([0-9]+(?:\.[0-9]+)?)"\s+y\d*="\s*([0-9]+(?:\.[0-9]+)?)"'), 100.0, False),  # Molmo v1
)
_LEGACY_PERMILLE = re.compile(r"(?:\d+|p)\s*=\s*([0-9]{3})\s*,\s*([0-9]{3})")  # "p=512,301": per mille


def extract_timed_points(text: str, width: float, height: float) -> list[tuple[float, float, float]]:
    """(image id or timestamp, x, y) in pixels for every point of every `<points coords="...">` (or `<tracks>`)
    in `text`. Points outside the image are dropped; a group whose id is not a number is skipped (Molmo2 raises)."""
    out = []
    for coords in _COORDS.finditer(text):
        for group in _GROUP.finditer(coords.group(1)):
            try:
                t = float(group.group(1))
            except ValueError:  # "1.2.3"
                continue
            for triple in _TRIPLE.finditer(group.group(2)):
                x, y = float(triple.group(2)) / 1000 * width, float(triple.group(3)) / 1000 * height
                if 0 <= x <= width and 0 <= y <= height:
                    out.append((t, x, y))
    return out


def _legacy_points(text: str, width: float, height: float) -> list[tuple[float, float]]:
    out = []
    for pattern, scale, early in _LEGACY:
        for m in pattern.finditer(text):
            x, y = float(m.group(1)), float(m.group(2))
            if max(x, y) <= scale:  # a larger value is an invalid output
                out.append((x / scale * width, y / scale * height))
        if early and out:
            return out
    for m in _LEGACY_PERMILLE.finditer(text):
        x, y = int(m.group(1)) / 10.0, int(m.group(2)) / 10.0
        if max(x, y) <= 100:
            out.append((x / 100 * width, y / 100 * height))
    return out


def extract_points(text: str, width: float, height: float) -> list[tuple[float, float]]:
    """Pixel (x, y) of the points in an answer, in any format Molmo2 emits or emitted."""
    points = [(x, y) for _, x, y in extract_timed_points(text, width, height)]
    return points or _legacy_points(text, width, height)


# -----------------------------------------------------------------------------
# pointing and counting


def point_in_mask(x: float, y: float, mask: np.ndarray) -> bool:
    """Is (x, y) inside the bool [H, W] mask? Coordinates round half to even (Python's round), as in Molmo2."""
    col, row = int(round(x)), int(round(y))
    return 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and bool(mask[row, col])


def _scores(hits: int, predicted: int, expected: int) -> dict[str, float]:
    if expected == 0:  # nothing to find: right only when nothing is predicted
        score = float(predicted == 0)
        return {"precision": score, "recall": score, "f1": score}
    if predicted == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall = hits / predicted, hits / expected
    f1 = 0.0 if precision == 0 or recall == 0 else 2 * precision * recall / (precision + recall + 1e-10)
    return {"precision": precision, "recall": recall, "f1": f1}


def pointing_scores(
    prediction: str, gt_points: np.ndarray | Sequence, masks: Sequence[np.ndarray], image_size: tuple[int, int]
) -> dict[str, float]:
    """Molmo2's PointingEval for one example: gt_points [N, 2] pixel (x, y); masks[j] the bool [H, W] mask of
    ground-truth point j (two points on one object each get its mask); image_size (width, height)."""
    gt = np.asarray(gt_points, dtype=float).reshape(-1, 2)
    if len(masks) != len(gt):
        raise ValueError(f"{len(gt)} ground-truth points but {len(masks)} masks: one mask per point")
    predicted = extract_points(prediction, *image_size)
    hits = 0
    if len(gt) and predicted:
        rows, cols = linear_sum_assignment(cdist(np.asarray(predicted), gt))
        hits = sum(point_in_mask(*predicted[i], masks[j]) for i, j in zip(rows, cols, strict=True))
    return _scores(hits, len(predicted), len(gt))


def video_pointing_scores(
    prediction: str,
    gt_points: Sequence[tuple[float, float, float]],
    masks: Sequence[Mapping[float, np.ndarray]],
    video_size: tuple[int, int],
    duration: float,
) -> dict[str, float]:
    """Molmo2's VixMoPointEval for one example: gt_points (t seconds, x, y pixels); masks[j] maps a time to the
    bool [H, W] mask of point j's object then. Matching is on (t / duration, x / width, y / height), each scaled to
    0..100 and rounded to 0.1; a hit needs a mask at exactly the predicted time."""
    width, height = video_size
    predicted = extract_timed_points(prediction, width, height)
    if len(masks) != len(gt_points):
        raise ValueError(f"{len(gt_points)} ground-truth points but {len(masks)} masks: one mask per point")

    def scaled(points: Sequence[tuple[float, float, float]]) -> np.ndarray:
        return np.array(
            [
                (round(t / duration * 100, 1), round(x / width * 100, 1), round(y / height * 100, 1))
                for t, x, y in points
            ]
        )

    hits = 0
    if len(gt_points) and predicted:
        rows, cols = linear_sum_assignment(cdist(scaled(predicted), scaled(gt_points)))
        for i, j in zip(rows, cols, strict=True):
            t, x, y = predicted[i]
            hits += t in masks[j] and point_in_mask(x, y, masks[j][t])
    return _scores(hits, len(predicted), len(gt_points))


def count_scores(prediction: str, count: int) -> dict[str, float]:
    """Molmo2's PointCountEval for one example. It counts the points in the answer: the number the text states is
    parsed and then overwritten, so "3" alone counts 0 and "There are none." counts 0; `valid` is always 1."""
    text = prediction.lower().rstrip(".").strip()
    n = len(extract_points(text, 100, 100))  # the size only decides which points are in bounds: all are
    return {"correct": float(n == count), "close": float(abs(n - count) <= 1), "valid": 1.0}


# -----------------------------------------------------------------------------
# VQA (olmo/eval/vqa.py, the normalisation of the official VQA v2 evaluation)

_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as written there: "(?!<=" is a lookahead, not a lookbehind
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = ("a", "an", "the")
# Contractions written without their apostrophe -> with it (the VQA v2 evaluation's table; keys with capitals
# never match, since the text is lower-cased first, but are kept so the table is the same)
_CONTRACTIONS = dict(
    pair.split(":")
    for pair in """aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
    couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've
    hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's
    Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's
    maam:ma'am mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't
    mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at
    'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've
    shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd
    somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's
    someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll someones:someone's
    somethingd:something'd somethingd've:something'd've something'dve:something'd've somethingll:something'll
    thats:that's thered:there'd thered've:there'd've there'dve:there'd've therere:there're theres:there's
    theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas
    wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're
    whats:what's whatve:what've whens:when's whered:where'd wheres:where's whereve:where've whod:who'd
    whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll whyre:why're whys:why's
    wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all
    yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd
    youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've""".split()
)


def normalize_vqa_answer(answer: str) -> str:
    """VQA v2 normalisation: lower case; punctuation removed (or made a space); periods not in numbers removed
    (at most 32: Molmo2 passes re.UNICODE where re.sub takes its count); number words -> digits; no articles;
    contractions restored."""
    text = answer.replace("\n", " ").replace("\t", " ").lower().strip()
    out = text
    remove = bool(_COMMA_IN_NUMBER.search(text))  # "1,000" -> "1000"; otherwise depends on the mark's spacing
    for p in _PUNCTUATION:
        out = out.replace(p, "" if remove or p + " " in text or " " + p in text else " ")
    out = _PERIOD.sub("", out, count=32)  # re.UNICODE == 32, passed as the count in Molmo2
    words = [_NUMBER_WORDS.get(w, w) for w in out.split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def clean_prediction(prediction: str) -> str:
    """VqaEval's reading of an answer: the text after "Answer:" if any; else the most frequent line (first of
    the ties); runs of spaces collapsed."""
    prediction = prediction.strip()
    if "Answer:" in prediction:
        return prediction.split("Answer:")[1].strip()
    if "\n" in prediction:
        lines = [" ".join(line.split()) for line in prediction.split("\n")]
        counts = Counter(lines)
        return max(lines, key=lambda line: counts[line])  # max keeps the first of the most frequent
    return " ".join(prediction.split())


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """VQA v2's soft accuracy as Molmo2 computes it: min(number of answers equal to the prediction / 3, 1), after
    normalising both; no averaging over subsets of 9 of the 10 answers."""
    matches = Counter(normalize_vqa_answer(a) for a in answers)[normalize_vqa_answer(clean_prediction(prediction))]
    return min(matches / 3.0, 1.0)
