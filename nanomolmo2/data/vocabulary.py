"""The answer vocabulary of a dataset: every token its answers can contain, for a restricted output head.

A tiny model trained on ShapesWorld answers with a few hundred distinct tokens, yet a full Qwen3 head
scores 151,936 of them for every loss token — most of a tiny model's compute. `answer_vocabulary` collects
the tokens of every answer text in a data folder (captions, answers, options, labels, assistant turns)
plus everything the answer formats add (digits, point and track tags, counting phrases, `<|im_end|>`).
"""

from __future__ import annotations

from pathlib import Path

from .jsonl import jsonl_files, parse_line
from .points import NO_MATCH
from .tokenizer import Tokenizer

# What formatted answers add around the dataset's own words (points.py, image_datasets.py).
FORMAT_TEXTS = (
    "0 1 2 3 4 5 6 7 8 9 0123456789",
    '<points coords="1 1 100 200;0.5 2 300 400">x</points>',
    '<tracks coords="0.0 1 2 3;1.5 2 4 5">x</tracks>',
    'Counting the <points coords="1 1 100 200">x</points> shows a total of 12.',
    'There are 3 <points coords="1 1 100 200">x</points>.',
    NO_MATCH,
)
ANSWER_FIELDS = ("caption", "answer", "label")


def _answer_texts(annotation: dict) -> list[str]:
    texts = [str(annotation[k]) for k in ANSWER_FIELDS if k in annotation]
    texts += [str(option) for option in annotation.get("options", [])]
    texts += [m["content"] for m in annotation.get("messages", []) if m.get("role") == "assistant"]
    return texts


def answer_vocabulary(folder: str | Path, tokenizer: Tokenizer | None = None) -> list[int]:
    """Sorted token ids of every answer the folder's JSONL rows can produce (malformed lines and annotations are
    ignored)."""
    tokenizer = tokenizer or Tokenizer()
    texts = list(FORMAT_TEXTS)
    for file in jsonl_files(folder):
        for line in Path(file).read_text(encoding="utf-8").splitlines():
            try:
                row = parse_line(line)
            except ValueError:  # malformed (also non-finite numbers, deep nesting): the datasets report it
                continue
            for annotation in row.get("annotations", []) if isinstance(row, dict) else []:
                try:
                    texts += _answer_texts(annotation)
                except (AttributeError, TypeError):
                    continue  # a malformed annotation: the datasets report and skip it
    ids = {tokenizer.eos_id}
    # Plain text, as chat.py encodes answers: special-token strings in the data are ordinary tokens there too.
    for encoded in tokenizer.encode_text_batch(texts):
        ids.update(encoded)
    # Each text is tokenised alone; inside answers a word may follow a space or start the text, so add both.
    for encoded in tokenizer.encode_text_batch([" " + t for t in texts]):
        ids.update(encoded)
    return sorted(ids)
