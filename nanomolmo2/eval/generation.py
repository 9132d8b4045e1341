"""Batched generation: several prompts with their images / videos -> answers, with the KV cache.

Prompts are built by the training chat layout (data/chat.py): media first, then
`<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n`. A batch is left-padded so that every
row's next token is at the last position; the vision inputs of all rows are concatenated in row order,
which is the order of their `<im_patch>` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.chat import prompt
from ..data.processor import Processor, merge_vision_inputs, vision_token_mask
from ..models.nanomolmo2 import NanoMolmo2
from ..tokens import PAD_ID
from .screened_head import greedy_head


@dataclass
class Request:
    question: str
    images: list = field(default_factory=list)  # paths or PIL images
    video: tuple[np.ndarray, list[float]] | None = None  # (frames, times)
    max_new_tokens: int = 64


def _left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.stack([torch.cat([r.new_full((width - len(r),), value), r]) for r in rows])


def model_inputs(rows: list[torch.Tensor], vision: list, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Prompts (token ids, any lengths) and the vision inputs of all of them, in row order -> `generate`'s inputs."""
    ids = _left_pad(rows, PAD_ID)
    mask = _left_pad([torch.ones_like(row) for row in rows], 0)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    inputs["mm_token_type_ids"] = vision_token_mask(ids).to(device)
    if vision:
        pixel_values, pooling = merge_vision_inputs(vision)
        inputs["pixel_values"], inputs["image_token_pooling"] = pixel_values.to(device), pooling.to(device)
    return inputs


@torch.no_grad()
def generate_answers(
    model: NanoMolmo2, processor: Processor, requests: list[Request], batch_size: int = 16
) -> list[str]:
    """Greedy answers to `requests`, in order (batches group requests of similar length)."""
    device = next(model.parameters()).device
    answers: list[str] = [""] * len(requests)
    encoded = []
    for request in requests:
        vision = [processor.preprocess(image) for image in request.images]
        if request.video is not None:
            vision.append(processor.preprocess_video(*request.video))
        encoded.append((torch.tensor(prompt(processor, vision, request.question)), vision))
    order = sorted(range(len(requests)), key=lambda i: len(encoded[i][0]))
    head = greedy_head(model)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        inputs = model_inputs([encoded[i][0] for i in chunk], [v for i in chunk for v in encoded[i][1]], device)
        max_new_tokens = max(requests[i].max_new_tokens for i in chunk)
        new_tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, greedy_head=head)
        for row, i in enumerate(chunk):
            tokens = new_tokens[row].tolist()
            if processor.tokenizer.eos_id in tokens:
                tokens = tokens[: tokens.index(processor.tokenizer.eos_id)]
            answers[i] = processor.tokenizer.decode(tokens[: requests[i].max_new_tokens]).strip()
    return answers
