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

Over-long examples are truncated as Molmo2 truncates them (`max_len`; `tokenize_message_list` in
olmo/preprocessing/text_preprocessor.py, `MMCollator` in olmo/preprocessing/multimodal_collator.py): a
conversation after the first whose first answer token would sit at or beyond `max_len` is dropped with all later
ones (the loss weights count the conversations kept), then the tokens are cut at `max_len`. An example whose media
alone do not fit, or whose every answer token would be cut, is refused (a ValueError naming its file:line).
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

# Molmo2's SFT gives its pointing, tracking and video-pointing datasets (VideoPoint counting included) a flat
# weight of 0.2 per answer token and its video captions 0.1 (launch_scripts/sft.py, `point_weight` and
# `cap_weight`); nanoMolmo2 tells them apart by the conversation's style rather than by dataset.
FLAT_WEIGHTS = {
    **dict.fromkeys(("pointing", "point_count", "count_point", "tracking", "video_pointing", "video_counting"), 0.2),
    "video_caption": 0.1,
}


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
    max_crops: int | None = None  # crops per image when not the processor's own (Molmo2's high-res pointing)


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


def conversation_weight(style: str, num_loss_tokens: int, num_conversations: int, weighting: str) -> float:
    """The weight of every loss token of one conversation (olmo/preprocessing/text_preprocessor.py, MessageWeight).

    "none": 1.0 (Molmo2's stage 1). "molmo2" (its SFT): a flat FLAT_WEIGHTS[style]; otherwise 2/sqrt(n) with n the
    loss tokens of the whole conversation (all its turns), divided by sqrt(conversations) when the example has
    more than one. Molmo2 leaves a multi-conversation example's final closing token out of n (it appends that one
    after the fact, copying the weight); the caller passes n accordingly.
    """
    if weighting == "none":
        return 1.0
    if style in FLAT_WEIGHTS:
        return FLAT_WEIGHTS[style]
    return 2.0 / math.sqrt(max(num_loss_tokens, 1)) / math.sqrt(num_conversations)


def tokenize_example(
    example: Example, processor: Processor, weighting: str = "none", max_len: int | None = None
) -> TokenizedExample:
    """Load and preprocess the media (images, then the video), tokenise every conversation (module docstring).

    weighting: "none" (every answer token 1.0) or "molmo2" (Molmo2's SFT loss weights).
    max_len: truncate to this many tokens (module docstring); None keeps everything.
    """
    vision: list[ImageInputs | VideoInputs] = [
        processor.preprocess(image, example.max_crops) for image in example.images
    ]
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
    if max_len is not None and len(prefix) >= max_len:
        raise ValueError(f"{example.source}: its media take {len(prefix)} tokens, not fewer than seq_len {max_len}")

    # Each conversation's tokens and labels; those that would start answering beyond max_len are dropped.
    kept: list[tuple[list[int], list[int]]] = []
    length = len(prefix)
    for conversation in conversations:
        ids: list[int] = []
        labels: list[int] = []
        for t, (user, answer) in enumerate(conversation.turns):
            prompt_ids = user_turn(processor.tokenizer, user, first=t == 0)
            answer_ids = answer_turn(processor.tokenizer, answer)
            ids += prompt_ids + answer_ids
            labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        first_answer = next(j for j, label in enumerate(labels) if label != IGNORE_INDEX)
        if kept and max_len is not None and length + first_answer >= max_len:
            break  # this one and all later ones (tokenize_message_list keeps the first whatever its length)
        kept.append((ids, labels))
        length += len(ids)

    all_ids, all_labels = list(prefix), [IGNORE_INDEX] * len(prefix)
    weights = [0.0] * len(prefix)
    positions = list(range(len(prefix)))
    annotations = [0] * len(prefix)
    for k, ((ids, labels), conversation) in enumerate(zip(kept, conversations, strict=False), start=1):
        num_loss_tokens = sum(label != IGNORE_INDEX for label in labels) - (len(kept) > 1)
        weight = conversation_weight(conversation.style, num_loss_tokens, len(kept), weighting)
        all_ids += ids
        all_labels += labels
        weights += [weight if label != IGNORE_INDEX else 0.0 for label in labels]
        positions += range(len(prefix), len(prefix) + len(ids))
        annotations += [k] * len(ids)
    if max_len is not None and len(all_ids) > max_len:
        if all(label == IGNORE_INDEX for label in all_labels[:max_len]):
            raise ValueError(f"{example.source}: seq_len {max_len} would cut every answer token")
        all_ids, all_labels, weights = all_ids[:max_len], all_labels[:max_len], weights[:max_len]
        positions, annotations = positions[:max_len], annotations[:max_len]

    input_ids = torch.tensor(all_ids)
    slots, features = int((input_ids == IMAGE_PATCH_ID).sum()), sum(v.token_pooling.shape[0] for v in vision)
    if slots != features:
        raise ValueError(f"{example.source}: {slots} <im_patch> slots for {features} vision tokens")
    return TokenizedExample(
        input_ids=input_ids,
        labels=torch.tensor(all_labels),
        loss_weights=torch.tensor(weights, dtype=torch.float32),
        position_ids=torch.tensor(positions),
        annotation_ids=torch.tensor(annotations),
        mm_token_type_ids=vision_token_mask(input_ids),
        vision=vision,
        source=example.source,
    )
