"""The training configuration: one dataclass, read from a TOML file, then command-line overrides.

    config = load_config("tiny_stage1", overrides={"max_steps": 100, "model.llm.hidden_size": 96})

A config is a TOML file or the name of one shipped in `nanomolmo2/configs/` (`stage1`..`stage3` for the real
model, `tiny_stage1`..`tiny_stage3` for CPUs). Keys of the TOML file are the fields below; `[model.llm]`,
`[model.vision]`, `[model.connector]` tables set the architecture (NanoMolmo2Config). Unknown keys are
errors, values are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..models.config import NanoMolmo2Config


@dataclass
class TrainConfig:
    stage: int = 1
    # ---- model: a fresh `model` architecture, or weights from folders / a previous stage
    model: NanoMolmo2Config = field(default_factory=NanoMolmo2Config)
    molmo2_path: str = ""  # with qwen3_path: Molmo2's ViT + pooling and Qwen3 (the nanoMolmo2 default)
    vision_path: str = ""  # or with qwen3_path: a vision encoder folder (SigLIP, as Molmo2 starts) and a new connector
    qwen3_path: str = ""
    init_from: str = ""  # a Molmo2-format folder (e.g. the previous stage's final/) to start from
    # "full", or "data": a fresh model's head scores only the tokens that the answers of `data` and
    # `val_data` contain
    # (data/vocabulary.py; for tiny models, whose 151,936-way head would cost most of the compute)
    output_vocabulary: str = "full"
    # ---- data
    data: str = ""  # a folder written by `nanomolmo2 synth` or `nanomolmo2 prepare`
    val_data: str = ""  # held-out folder for the validation loss (empty: none)
    # (rate, dataset kinds) groups; kinds: caption, pointing, vqa, text, video
    mixture: list = field(default_factory=lambda: [[0.6, ["caption"]], [0.3, ["pointing"]], [0.1, ["text"]]])
    seq_len: int = 2536
    max_crops: int | None = None  # override the model's `vision.max_crops` (e.g. 24 for pointing)
    max_frames: int = 128
    # annotations of one image per example: None = all, shuffled at each draw, the token budget dropping the last
    # (Molmo2); a number = a stable subset of at most that many (the ShapesWorld demo's configs)
    max_conversations: int | None = None
    loss_weighting: str = "none"  # "none" or "molmo2" (2/sqrt(n) per conversation, 0.2 for points, ...)
    num_workers: int = 2  # DataLoader workers per data shard
    # ---- optimisation
    batch_size: int = 128  # global: packed sequences per optimizer step, over all ranks and accumulation
    micro_batch_size: int = 4  # sequences per forward pass on one rank
    max_steps: int = 1000
    lr_connector: float = 2e-4
    lr_vision: float = 6e-6
    lr_llm: float = 2e-5
    warmup_connector: int = 200
    warmup_vision: int = 2000
    warmup_llm: int = 2000
    min_lr_ratio: float = 0.1  # cosine decay to 10% of the peak
    freeze_vision: bool = True
    freeze_connector: bool = False
    freeze_llm: bool = False
    # Molmo2's default (`ft_embedding = "lm_head"`): a pretrained LLM's (qwen3_path, init_from) base-vocabulary
    # embedding rows stay as they were; the 128 new rows, the final norm and an untied head train (a head tied to
    # the table, as Qwen3's, stays too). An LLM from random weights trains its whole table.
    freeze_embedding: bool = True
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-6
    grad_clip: float = 1.0  # per parameter group (vision / connector / llm), as in Molmo2
    z_loss: float = 1e-4
    # Molmo2's residual dropout, set on the model for this run (LanguageModelConfig): its stage 1 uses
    # response_residual_dropout = 0.1 (positions whose next token has loss), its SFT residual_dropout = 0.1
    residual_dropout: float = 0.0
    response_residual_dropout: float = 0.0
    max_bad_steps: int = 5  # stop after this many non-finite steps in a row
    # ---- systems
    dtype: str = "auto"  # "auto" (bf16 autocast on GPU and on CPUs with native bf16, else fp32), "float32", "bfloat16"
    # "auto": FlexAttention on CUDA (a block mask built from the segment / annotation / vision ids, compiled),
    # SDPA with a dense mask elsewhere (PyTorch has no FlexAttention backward on CPU); or "flex" / "sdpa"
    attention: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    distributed: str = "ddp"  # "ddp" or "fsdp" (FSDP2 fully_shard) under torchrun
    # ---- run
    out_dir: str = "runs/train"
    resume_from: str = ""  # a run folder (its latest complete checkpoint) or a checkpoint folder
    overwrite: bool = False  # a fresh run may delete an earlier run's checkpoints, metrics and final/ in out_dir
    save_every: int = 500
    keep_last: int = 2
    eval_every: int = 100
    val_batches: int = 4
    log_every: int = 1
    log: str = "tensorboard"  # where the numbers go besides metrics.jsonl: "tensorboard", "wandb" or both (tracking.py)
    wandb_project: str = "nanomolmo2"
    peak_flops: float = 0.0  # FLOP/s of one device, for the MFU (0: the table of known GPUs in flops.py)
    seed: int = 0


class ConfigError(ValueError):
    """A config that cannot be used: an unknown key, a value of the wrong type, settings that do not fit."""


# What a resumed run must share with the run it continues: the model, the data and how it is cut into steps.
# Everything else (max_steps, lrs, logging, workers, ...) may change on resume.
FIXED_ON_RESUME = (
    "model",
    "data",
    "mixture",
    "seq_len",
    "batch_size",
    "micro_batch_size",
    "max_conversations",
    "max_frames",
    "max_crops",
    "loss_weighting",
    "seed",
    "init_from",
    "molmo2_path",
    "vision_path",
    "qwen3_path",
    "output_vocabulary",
)


def _convert(value, kind):
    """A TOML / command-line value as the field's type (strings from the command line are parsed)."""
    if isinstance(value, str) and kind is not str:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"expected true/false, got {value!r}")
            return value.lower() in ("true", "1")
        try:
            if kind in (int, float):
                return kind(value)
            value = tomllib.loads(f"v = {value}")["v"]  # lists: TOML syntax, e.g. [0.9, 0.95]
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read {value!r} as {getattr(kind, '__name__', kind)}: {e}") from None
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is tuple or typing.get_origin(kind) is tuple:
        return tuple(value)
    return value


def set_field(obj, dotted: str, value) -> None:
    """Set `a.b.c` on nested dataclasses, converting the value; unknown names are errors."""
    *path, name = dotted.split(".")
    for part in path:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
            raise ConfigError(f"unknown config key {dotted!r}")
        obj = getattr(obj, part)
    hints = typing.get_type_hints(type(obj))
    if not dataclasses.is_dataclass(obj) or name not in hints:
        raise ConfigError(f"unknown config key {dotted!r}")
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current) and isinstance(value, dict):
        for key, sub in value.items():
            set_field(obj, f"{name}.{key}", sub)
        return
    setattr(obj, name, _convert(value, hints[name]))


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    folder = importlib.resources.files("nanomolmo2") / "configs"
    return sorted(f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml"))


def config_file(name_or_path: str | Path):
    """A TOML file: a path that exists, or the name of a packaged config (`tiny_stage1` or `tiny_stage1.toml`)."""
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    name = Path(name_or_path).name.removesuffix(".toml")
    if name in packaged_configs():
        return importlib.resources.files("nanomolmo2") / "configs" / f"{name}.toml"
    raise FileNotFoundError(
        f"no config {str(name_or_path)!r}: not a file, nor one of the packaged configs {', '.join(packaged_configs())}"
    )


def load_config(name_or_path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """TrainConfig defaults, then the TOML file (a path or a packaged name) or a run folder's config.json, then
    `overrides` (dotted keys)."""
    config = TrainConfig()
    if name_or_path and str(name_or_path).endswith(".json"):
        for key, value in json.loads(Path(name_or_path).read_text()).items():
            set_field(config, key, value)
    elif name_or_path:
        with config_file(name_or_path).open("rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{name_or_path}: not valid TOML ({e})") from None
            for key, value in values.items():
                set_field(config, key, value)
    for key, value in (overrides or {}).items():
        set_field(config, key, value)
    return config


def config_dict(config) -> dict:
    """The config as plain data (for the run folder's config.json)."""
    return dataclasses.asdict(config)


def resume_differences(config: TrainConfig, saved: dict) -> list[str]:
    """The settings FIXED_ON_RESUME in which `config` differs from a run's saved config.json (as plain data)."""
    now = json.loads(json.dumps(config_dict(config), default=str))
    saved = json.loads(json.dumps(saved))
    if config.output_vocabulary == "data":  # the head's tokens are derived from the data, which is compared itself
        for run in (now, saved):
            run.get("model", {}).get("llm", {}).pop("output_token_ids", None)
    return [f"{key}: {saved.get(key)!r} -> {now[key]!r}" for key in FIXED_ON_RESUME if now[key] != saved.get(key)]
