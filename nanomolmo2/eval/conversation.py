"""A conversation with a model about images or a video: what `nanomolmo2 chat` and `nanomolmo2 serve` share.

Every turn's prompt is laid out as in training (data/chat.py): the media first, then the earlier questions with
the model's answers, then the new question. An image added mid-conversation joins the media at the front, so each
turn's prompt is built and prefilled afresh (no KV cache is carried between turns). Answers stream: `ask` calls
`on_text` with each piece of text as soon as its tokens are generated (draw.py's `answer_picture` draws the
points of an answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch

from ..data.chat import prompt
from ..data.image_preprocessing import ImageInputs, VideoInputs
from ..data.processor import Processor
from ..data.tokenizer import Tokenizer
from ..models.nanomolmo2 import NanoMolmo2
from .generation import model_inputs
from .screened_head import greedy_head


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


class TextStream:
    """Token ids one at a time -> the text each adds. A character split over several tokens (a byte-level BPE)
    is held back until its last byte arrives, so a printed piece is never a broken character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer, self.ids, self.text = tokenizer, [], ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text) :], text
        return piece


@dataclass
class Conversation:
    model: NanoMolmo2
    processor: Processor
    images: list[PIL.Image.Image] = field(default_factory=list)
    video: tuple[np.ndarray, list[float]] | None = None  # (frames [T, H, W, 3], times)
    sampling: Sampling = field(default_factory=Sampling)
    history: list[tuple[str, str]] = field(default_factory=list)  # (question, answer) turns so far
    last_prompt_tokens: int = 0

    def __post_init__(self) -> None:
        self._vision: list[ImageInputs] = [self.processor.preprocess(image) for image in self.images]
        self._video: VideoInputs | None = None if self.video is None else self.processor.preprocess_video(*self.video)

    def add_image(self, image: PIL.Image.Image) -> None:
        """One more image: it becomes "Image n" of the media prefix (the earlier turns stay)."""
        self._vision.append(self.processor.preprocess(image))
        self.images.append(image)

    def reset(self) -> int:
        """Forget the questions and answers (the media stay); returns how many turns were forgotten."""
        forgotten, self.history = len(self.history), []
        return forgotten

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> str:
        """The model's answer to `question` after the turns so far; `on_text` gets it piece by piece."""
        vision = self._vision + ([self._video] if self._video is not None else [])
        ids = torch.tensor(prompt(self.processor, vision, question, self.history))
        self.last_prompt_tokens = len(ids)
        device = next(self.model.parameters()).device
        eos, stream = self.processor.tokenizer.eos_id, TextStream(self.processor.tokenizer)
        done = False

        def on_token(token: torch.Tensor) -> None:
            nonlocal done
            done = done or int(token[0]) == eos
            if not done and (piece := stream.push(int(token[0]))) and on_text is not None:
                on_text(piece)

        s = self.sampling
        generator = torch.Generator(device).manual_seed(s.seed) if s.temperature > 0 else None
        new_tokens = self.model.generate(
            **model_inputs([ids], vision, device),
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            generator=generator,
            on_token=on_token,
            greedy_head=greedy_head(self.model),
        )[0].tolist()
        tokens = new_tokens[: new_tokens.index(eos)] if eos in new_tokens else new_tokens
        answer = self.processor.tokenizer.decode(tokens).strip()
        self.history.append((question, answer))
        return answer
