"""Tiny checkpoints laid out as the Hub ships them, inside a Hugging Face cache folder, for offline tests of Hub ids.

- `add_to_hub_cache`: a folder's files as `hf download ORG/NAME` leaves them in HF_HUB_CACHE: blobs named by their
  hash, `snapshots/<commit>/<file>` as relative symlinks to them, and `refs/main` naming the commit.
- `tiny_qwen3_folder`: a random Qwen3 saved by transformers, with the real Qwen3 tokenizer files.
- `sharded_molmo2_folder`: a random Molmo2 saved by transformers, re-sharded like the released Molmo2-4B (the LLM's
  blocks in the first shard; the vision backbone and `lm_head` in the last) with its index.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Molmo2ForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM

from nanomolmo2.formats.tokenizer_files import default_tokenizer_file, molmo2_tokenizer, sha256_of
from tests.models.reference import randomize, tiny_molmo2_config

LLM_SHARD, VISION_SHARD = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """Copy `folder`'s files (but `leave_out`) into the cache as the snapshot of `repo_id`; returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = sha256_of(next(iter(sorted(folder.iterdir()))))[:40]  # any 40-hex name will do
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in leave_out):
        blob = repo / "blobs" / sha256_of(file)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def tiny_qwen3_folder(folder: Path, seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=151936, hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=20, tie_word_embeddings=True,
    )  # fmt: skip
    model = randomize(Qwen3ForCausalLM(config), seed)
    model.tie_weights()
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(default_tokenizer_file().parent / name, folder / name)
    return model


def sharded_molmo2_folder(folder: Path, seed: int = 0, config=None) -> Molmo2ForConditionalGeneration:
    """config: a transformers Molmo2Config (default: tiny_molmo2_config())."""
    torch.manual_seed(seed)
    model = randomize(Molmo2ForConditionalGeneration(config or tiny_molmo2_config()), seed)
    model.save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    weight_map = {key: LLM_SHARD if key.startswith("model.transformer.") else VISION_SHARD for key in state}
    for shard in (LLM_SHARD, VISION_SHARD):
        save_file({k: v for k, v in state.items() if weight_map[k] == shard}, folder / shard, {"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "tokenizer.json").write_text(molmo2_tokenizer().to_str())  # with Molmo2's tokens, as released
    return model
