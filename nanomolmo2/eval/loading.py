"""Opening a model to use it: a checkpoint (a local folder, or a Hub id fetched through huggingface_hub's cache),
its dtype and device, and the options every command that runs a model shares (generate, chat, serve).

A Hub id is downloaded once into the Hugging Face cache (formats/hub.py); with HF_HUB_OFFLINE=1 it must be there
already (`hf download ID`). A name that is neither is a one-line error. The model comes with the checkpoint's own
tokenizer (the bundled Qwen3 one when the folder has none). `--dtype auto` is bf16 on a GPU and fp32 on a CPU: there
decoding is bound by reading the weights, and fp32 keeps greedy answers exact while the screened head
(screened_head.py) reads an int8 copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.processor import Processor
from ..data.tokenizer import checkpoint_tokenizer
from ..formats import hub
from ..formats.weights import CheckpointError as FormatError
from ..models.nanomolmo2 import NanoMolmo2

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class CheckpointError(SystemExit):
    """A checkpoint that cannot be opened; as a SystemExit its message is the command's one-line error."""


def add_model_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    """The options of every command that answers with a model."""
    where = "a Molmo2-format folder (e.g. a run's final/) or a Hub id (e.g. allenai/Molmo2-4B)"
    parser.add_argument("--checkpoint", required=True, help=where)
    parser.add_argument(
        "--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on GPU, else fp32"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when --temperature > 0")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--seed", type=int, default=0, help="of the sampling (with --temperature > 0)")


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local folder as it is; else a Hub id (`org/name`), its config, tokenizer and weights fetched into (or found
    in) the Hugging Face cache."""
    try:
        return hub.resolve_folder(checkpoint, hub.METADATA_FILES + ["*.safetensors"])
    except FormatError as e:
        raise CheckpointError(str(e)) from None


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[choice]


def open_model(checkpoint: str | Path, dtype: str = "auto", device: str | None = None) -> tuple[NanoMolmo2, Processor]:
    """The model in eval mode on its device and dtype, and the processor that matches its vision encoder."""
    folder = resolve_checkpoint(checkpoint)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{checkpoint}: no config.json in {folder} (not a Molmo2-format checkpoint)")
    where = pick_device(device)
    model = NanoMolmo2.from_pretrained(folder, dtype=pick_dtype(dtype, where)).to(where).eval()
    return model, Processor.for_model(model.config, checkpoint_tokenizer(folder))
