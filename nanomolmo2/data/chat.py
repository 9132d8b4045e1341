"""Molmo2's chat layout, written once: training examples (examples.py) and generation prompts
(eval/generation.py) are both built from these functions, so a prompt is exactly the start of the
training sequence for the same question.

    BOS [Image 1] <image tokens> [Image 2] <image tokens> ... <video frames>     media_prefix
    <|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n            user_turn (first)
    {answer}<|im_end|>                                                            answer_turn (carries the loss)
    \\n<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n          user_turn (later turns)

BOS is `<|im_end|>` (Qwen3 has no BOS of its own). "Image i" labels appear only when there are several
images; a video comes after the images, each frame after its time (processor.py).

The markup written here keeps its special ids; the questions and answers are data and are encoded as plain
text (`Tokenizer.encode_text`): an `<|im_end|>` or `<im_patch>` inside them never becomes a control token.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tokens import BOS_TOKEN
from .image_preprocessing import ImageInputs, VideoInputs
from .processor import Processor
from .tokenizer import Tokenizer


def media_prefix(processor: Processor, vision: list[ImageInputs | VideoInputs]) -> list[int]:
    """BOS, then every image's tokens (labelled when there are several), then the video's frames."""
    num_images = sum(isinstance(v, ImageInputs) for v in vision)
    text, image_index = BOS_TOKEN, 0
    for item in vision:
        if isinstance(item, ImageInputs):
            image_index += 1
            text += (f"Image {image_index}" if num_images > 1 else "") + processor.image_string(item.grid)
        else:
            text += processor.video_string(item)
    return processor.tokenizer.encode(text)


def user_turn(tokenizer: Tokenizer, question: str, first: bool) -> list[int]:
    """The user's turn and the opening of the assistant's; turns after the first start on a new line."""
    newline = "" if first else "\n"
    return (
        tokenizer.encode(f"{newline}<|im_start|>user\n")
        + tokenizer.encode_text(question)
        + tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")
    )


def answer_turn(tokenizer: Tokenizer, answer: str) -> list[int]:
    """The assistant's answer and its closing `<|im_end|>` (the tokens that carry the loss)."""
    return tokenizer.encode_text(answer) + [tokenizer.eos_id]


def prompt(
    processor: Processor,
    vision: list[ImageInputs | VideoInputs],
    question: str,
    history: Sequence[tuple[str, str]] = (),
) -> list[int]:
    """What generation feeds the model: the media, the earlier (question, answer) turns of the conversation
    as training lays them out, then the new user turn. A turn's prompt is the start of the training sequence
    of the conversation that holds it; media added mid-conversation join the prefix, so the prompt is rebuilt."""
    ids = media_prefix(processor, vision)
    for t, (asked, answer) in enumerate(history):
        ids += user_turn(processor.tokenizer, asked, first=t == 0) + answer_turn(processor.tokenizer, answer)
    return ids + user_turn(processor.tokenizer, question, first=not history)
