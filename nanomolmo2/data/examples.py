"""Training examples: media + conversations -> tokens, labels and loss weights in Molmo2's chat layout.

One `Example` is one image (or several, or none) with one or more `Conversation`s about it. Tokenised,
the media come first and are shared by all conversations (chat.py has the layout; docs/MOLMO2.md, "Packing"):

    BOS  [Image 1] <vision tokens> [Image 2] <vision tokens> ...          annotation 0, positions 0..P-1
    <|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>  annotation 1, positions P..
    <|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>  annotation 2, positions P..

Each conversation sees the shared prefix and itself only (annotation ids), its positions restart after the
prefix, and only assistant answers (with their closing `<|im_end|>`) carry loss. An example whose `<im_patch>`
slots do not match its vision tokens one to one is refused here, with its file:line, before it can reach a batch
(where the forward pass would fail for the whole batch without naming the row).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..tokens import IGNORE_INDEX, IMAGE_PATCH_ID
from .chat import answer_turn, media_prefix, user_turn
from .image_preprocessing import ImageInputs, VideoInputs
from .processor import Processor, vision_token_mask

# Answers made of points: Molmo2 gives their tokens a flat, small weight; video captions too (docs/MOLMO2.md).
POINT_STYLES = ("pointing", "point_count", "count_point", "tracking", "video_pointing")
POINT_TOKEN_WEIGHT = 0.2
VIDEO_CAPTION_WEIGHT = 0.1


@dataclass
class Conversation:
    turns: list[tuple[str, str]]  # (user, assistant) pairs
    style: str = "chat"  # the task that produced it: caption, pointing, counting, vqa, chat, ...


@dataclass
class Example:
    conversations: list[Conversation]
    images: list[str | Path] = field(default_factory=list)  # up to 5; their order is "Image 1", "Image 2", ...
    # Anything with .load() -> (frames [T, H, W, 3] uint8, times), or (frames, times, (width, height)) when the
    # frames were resized as they were decoded (the size is the video's own: points are in its pixels); VideoClip.
    video: Any = None
    # Answers that need the sampled frame times (video points, tracks): (times, width, height) -> conversations.
    video_conversations: Callable[[list[float], int, int], list[Conversation]] | None = None
    source: str = ""  # "file.jsonl:line" for error messages


@dataclass
class TokenizedExample:
    input_ids: torch.Tensor  # [L] int64
    labels: torch.Tensor  # [L] int64, IGNORE_INDEX where there is no loss
    loss_weights: torch.Tensor  # [L] float32 (0 where there is no loss)
    position_ids: torch.Tensor  # [L] int64, restarting after the shared prefix for every conversation
    annotation_ids: torch.Tensor  # [L] int64, 0 on the prefix, k on conversation k
    mm_token_type_ids: torch.Tensor  # [L] int64, 1 on vision tokens
    vision: list[ImageInputs | VideoInputs]  # the media of the prefix, in token order
    source: str = ""
    origin: tuple[int, int, int] = (-1, -1, -1)  # (stream position, dataset, row) when drawn from a mixture

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def answer_weight(style: str, num_answer_tokens: int, num_conversations: int, weighting: str) -> float:
    """Molmo2's SFT weighting: 2/sqrt(answer tokens), points flat 0.2, all / sqrt(conversations); or 1."""
    if weighting == "none":
        return 1.0
    if style in POINT_STYLES:
        base = POINT_TOKEN_WEIGHT
    elif style == "video_caption":
        base = VIDEO_CAPTION_WEIGHT
    else:
        base = 2.0 / math.sqrt(num_answer_tokens)
    return base / math.sqrt(num_conversations)


def tokenize_example(example: Example, processor: Processor, weighting: str = "none") -> TokenizedExample:
    """Load and preprocess the media (images, then the video), tokenise every conversation (module docstring).

    weighting: "none" (every answer token 1.0) or "molmo2" (Molmo2's SFT loss weights).
    """
    vision: list[ImageInputs | VideoInputs] = [processor.preprocess(image) for image in example.images]
    conversations = list(example.conversations)
    if example.video is not None:
        frames, times, *size = example.video.load()
        vision.append(processor.preprocess_video(frames, times))
        width, height = size[0] if size else (frames.shape[2], frames.shape[1])
        if example.video_conversations is not None:
            conversations += example.video_conversations(times, width, height)
    if not conversations:
        raise ValueError(f"{example.source}: no usable annotation")
    prefix = media_prefix(processor, vision)

    ids = list(prefix)
    labels = [IGNORE_INDEX] * len(prefix)
    weights = [0.0] * len(prefix)
    positions = list(range(len(prefix)))
    annotations = [0] * len(prefix)
    for k, conversation in enumerate(conversations, start=1):
        start = len(ids)
        for t, (user, answer) in enumerate(conversation.turns):
            prompt_ids = user_turn(processor.tokenizer, user, first=t == 0)
            answer_ids = answer_turn(processor.tokenizer, answer)
            weight = answer_weight(conversation.style, len(answer_ids), len(conversations), weighting)
            ids += prompt_ids + answer_ids
            labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
            weights += [0.0] * len(prompt_ids) + [weight] * len(answer_ids)
        positions += range(len(prefix), len(prefix) + len(ids) - start)
        annotations += [k] * (len(ids) - start)

    input_ids = torch.tensor(ids)
    slots, features = int((input_ids == IMAGE_PATCH_ID).sum()), sum(v.token_pooling.shape[0] for v in vision)
    if slots != features:
        raise ValueError(f"{example.source}: {slots} <im_patch> slots for {features} vision tokens")
    return TokenizedExample(
        input_ids=input_ids,
        labels=torch.tensor(labels),
        loss_weights=torch.tensor(weights, dtype=torch.float32),
        position_ids=torch.tensor(positions),
        annotation_ids=torch.tensor(annotations),
        mm_token_type_ids=vision_token_mask(input_ids),
        vision=vision,
        source=example.source,
    )
