"""Tiny checkpoints for the tests of the commands that use a model (chat, serve, generate), and a check of the
crosses those commands draw.

- `random_checkpoint`: a tiny random nanoMolmo2 whose head scores only a few plain words, so that its (random)
  answers are printable text.
- `scripted_checkpoint`: a tiny nanoMolmo2 whose weights are set so that greedy decoding writes one fixed answer,
  whatever the prompt. Attention and MLP outputs are zero, so a position's final hidden state is its own token's
  embedding; the answer's tokens (all distinct) get one-hot embeddings, and the untied head maps token k's
  direction to token k + 1 (the prompt's last token, "\\n" after `assistant`, to the first one; the last to EOS).
  Its head is full-size and fp32, so greedy decoding goes through the screened head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nanomolmo2.data.tokenizer import Tokenizer
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config

WORDS = " the cat sat on a mat and looked at red blue green squares circles"
# "\t" and "\r" separate the numbers so that no token repeats (a point on image 1, index 2, at x 473, y 650)
POINTS_ANSWER = '<points coords="1 2\t473\r650">dot'
VIDEO_POINTS_ANSWER = '<points coords="0.5 1\t473\r826">dot'  # on the frame at 0.5 s
PROMPT_END = "\n"  # the last token of every prompt: `<|im_start|>assistant\n`


def tiny_config() -> NanoMolmo2Config:
    config = NanoMolmo2Config.tiny()
    config.vision.max_crops, config.vision.overlap_margins = 2, (1, 1)
    return config


def random_checkpoint(folder: Path, seed: int = 0) -> Path:
    config = tiny_config()
    config.llm.output_token_ids = tuple(sorted(set(Tokenizer().encode(WORDS))))
    torch.manual_seed(seed)
    NanoMolmo2(config).save_pretrained(folder)
    return folder


def scripted_checkpoint(folder: Path, answer: str = POINTS_ANSWER) -> Path:
    tokenizer = Tokenizer()
    chain = tokenizer.encode(PROMPT_END) + tokenizer.encode_text(answer) + [tokenizer.eos_id]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"the tokens of {answer!r} repeat: a one-token state cannot script them")
    config = tiny_config()
    config.llm.tie_word_embeddings = False
    if len(chain) > config.llm.hidden_size:
        raise ValueError(f"{answer!r} is too long for hidden size {config.llm.hidden_size}")
    torch.manual_seed(0)
    model = NanoMolmo2(config)
    with torch.no_grad():
        for block in model.llm.layers:
            block.attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.llm.lm_head.weight.zero_()
        for k, (token, following) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
            model.llm.embed_tokens.weight[token] = torch.nn.functional.one_hot(torch.tensor(k), config.llm.hidden_size)
            model.llm.lm_head.weight[following, k] = 10.0
    model.save_pretrained(folder)
    return folder


def cross_at(picture: np.ndarray, x: float, y: float, r: int = 12) -> bool:
    """draw_points' cross: a white core through the point, outlined in black, all within `r` pixels of it."""
    white, black = (picture == 255).all(-1), (picture < 60).all(-1)
    x, y = round(x), round(y)
    window = (slice(y - r, y + r + 1), slice(x - r, x + r + 1))
    return bool(white[y, x]) and white[window].sum() == white.sum() >= 40 and black[window].sum() >= 20
