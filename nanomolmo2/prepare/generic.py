"""Any Hugging Face table with image / question / answer (or messages) columns -> the project's JSONL.

Molmo2's fine-tuning mixes in a hundred academic datasets (VQA v2, ChartQA, DocVQA, ...). They differ only in
their column names, so one converter takes the mapping on the command line:

    nanomolmo2 prepare HuggingFaceM4/ChartQA --from hf/chartqa/data --out data/real \\
        --columns image=image,question=query,answer=label
    nanomolmo2 prepare lmms-lab/VQAv2 --from hf/vqav2/data --out data/real \\
        --columns image=image,question=question,answers=answers
    nanomolmo2 prepare my-chats --from chats.jsonl --out data/real --columns image=image_url,messages=conversations

Columns (the keys of --columns; the values are the table's column names):
    image        a URL, an inline image as `datasets` stores one ({"bytes": ..., "path": ...}), or a list of them
                 (several images, at most 5); without it the rows are text-only
    image_sha256 the image's sha256, when the table gives it (URLs only: inline bytes need none)
    question     the question text; with `answer` (one text) or `answers` (a list: the most frequent is the
    answer / answers   training answer, and all of them are kept for the VQA soft score)
    options      a list of options, written as lettered choices after the question
    messages     a chat: [{"role": "user"|"assistant"|"system", "content": ...}] or ShareGPT's
                 [{"from": "human"|"gpt"|"system", "value": ...}]; "<image>" markers in it are removed
The dataset's name (the table's file name in OUT) is the last part of what is typed: "HuggingFaceM4/ChartQA"
-> ChartQA.jsonl.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from ..errors import UsageError
from .images import Size
from .tables import Media, text

COLUMN_KEYS = ("image", "image_sha256", "question", "answer", "answers", "options", "messages")
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}
MAGIC = [(b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"RIFF", ".webp"), (b"BM", ".bmp")]


def parse_columns(spec: str) -> dict[str, str]:
    """ "image=img,question=q,answer=a" -> {"image": "img", ...}; unknown keys or an unusable set are errors."""
    columns = {}
    for item in spec.split(","):
        key, sep, column = item.partition("=")
        key, column = key.strip(), column.strip()
        if not sep or not column or key not in COLUMN_KEYS:
            raise UsageError(f"--columns {spec!r}: expected KEY=COLUMN pairs with KEY one of {', '.join(COLUMN_KEYS)}")
        columns[key] = column
    has_qa = "question" in columns and ("answer" in columns or "answers" in columns)
    if has_qa == ("messages" in columns):
        raise UsageError(f"--columns {spec!r}: give question with answer (or answers), or messages — one of them")
    return columns


def inline_suffix(data: bytes) -> str:
    """The file suffix of image bytes, from their first bytes (what the `datasets` library stored)."""
    return next((suffix for magic, suffix in MAGIC if data.startswith(magic)), ".img")


class Generic:
    """The three functions of a converter (prepare's `Converter`) for a column mapping."""

    def __init__(self, columns: dict[str, str]) -> None:
        self.columns = columns
        self.kind = "image" if "image" in columns else "text"

    def media(self, row: dict) -> list[Media]:
        if "image" not in self.columns:
            return []
        value = row.get(self.columns["image"])
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > 5:
            raise ValueError(f"column {self.columns['image']!r}: expected 1 to 5 images, got {len(values)}")
        sha = row.get(self.columns["image_sha256"]) if "image_sha256" in self.columns else None
        media = []
        for item in values:
            if isinstance(item, str) and item.strip():
                media.append(Media(url=item.strip(), sha256=sha if len(values) == 1 else None))
            elif isinstance(item, dict) and isinstance(item.get("bytes"), bytes | bytearray) and item["bytes"]:
                data = bytes(item["bytes"])
                media.append(Media(data=data, sha256=hashlib.sha256(data).hexdigest()))
            else:
                raise ValueError(f"column {self.columns['image']!r}: not a URL nor inline image bytes")
        return media

    def annotations(self, row: dict, sizes: list[Size]) -> list[dict]:
        if "messages" in self.columns:
            return [{"task": "chat", "messages": chat_turns(row.get(self.columns["messages"]))}]
        question = text(row, self.columns["question"]).replace("<image>", "").strip()
        if "answers" in self.columns:
            answers = [a.strip() for a in row.get(self.columns["answers"]) or [] if isinstance(a, str) and a.strip()]
            if not answers:
                raise ValueError(f"column {self.columns['answers']!r}: no answer")
            answer = Counter(answers).most_common(1)[0][0]
        else:
            answer, answers = text(row, self.columns["answer"]).strip(), []
        annotation = {"task": "vqa", "question": question, "answer": answer}
        if answers:
            annotation["answers"] = answers
        if "options" in self.columns:
            options = row.get(self.columns["options"])
            if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
                raise ValueError(f"column {self.columns['options']!r}: expected a list of texts")
            annotation["options"] = options
        return [annotation]


def chat_turns(messages) -> list[dict]:
    """A chat in either common layout -> alternating user / assistant turns (system text goes in front of the
    first user turn as "System: {text}\n", Molmo2's layout in olmo/data/text_datasets.py; a last unanswered user
    turn is dropped)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages must be a list of objects")
    turns, system = [], []
    for m in messages:
        role = ROLES.get(str(m.get("role", m.get("from", ""))).lower())
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str):
            raise ValueError(f"a message without a known role and a text: {str(m)[:80]}")
        content = content.replace("<image>", "").strip()
        if role == "system":
            system.append(content)
        else:
            turns.append({"role": role, "content": content})
    if turns and turns[-1]["role"] == "user":
        turns.pop()
    if not turns or any(t["role"] != ("user", "assistant")[i % 2] for i, t in enumerate(turns)):
        raise ValueError("messages must alternate user/assistant, starting with the user")
    if system:
        turns[0]["content"] = f"System: {' '.join(system)}\n{turns[0]['content']}"
    return turns
