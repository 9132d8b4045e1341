"""`nanomolmo2 train` / `python -m nanomolmo2.train`: train one stage from a config file plus overrides.

    nanomolmo2 train --config tiny_stage1 --data data/shapes --out-dir runs/tiny/stage1
    torchrun --nproc_per_node 8 -m nanomolmo2.train --stage 2 --data /data/molmo2 --set distributed=fsdp

`--config` is a TOML file or a packaged config name (nanomolmo2/configs: stage1..3, tiny_stage1..3); with
`--stage N` alone, the packaged `stageN` config is used, and a config whose `stage` differs from `--stage`
is an error. Flags override the config file; `--set key=value` overrides any config field
(`model.llm.hidden_size=96`). `--learning-rate` sets the LLM's peak lr and scales the vision and connector
lrs by the same factor.
"""

from __future__ import annotations

import argparse
import logging
import os

FLAGS = {  # command-line flag -> config field
    "data": "data",
    "val_data": "val_data",
    "batch_size": "batch_size",
    "max_steps": "max_steps",
    "save_every": "save_every",
    "out_dir": "out_dir",
    "resume_from": "resume_from",
    "overwrite": "overwrite",
    "init_from": "init_from",
    "seed": "seed",
    "log": "log",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a TOML file of TrainConfig fields, or a packaged name (e.g. tiny_stage1)")
    parser.add_argument("--stage", type=int, choices=(1, 2, 3), help="alone: the packaged stageN config")
    parser.add_argument("--data", help="folder written by `nanomolmo2 synth` or `nanomolmo2 prepare`")
    parser.add_argument("--val-data", help="held-out folder for the validation loss")
    parser.add_argument("--batch-size", type=int, help="global batch: sequences per step over ranks and accumulation")
    parser.add_argument("--learning-rate", type=float, help="peak LLM lr (vision and connector lrs scale with it)")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--save-every", type=int)
    parser.add_argument("--out-dir")
    parser.add_argument("--resume-from", help="a run folder (latest complete checkpoint) or a checkpoint folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="start fresh in an --out-dir that holds an earlier run (deletes its checkpoints, metrics and final/)",
    )
    parser.add_argument("--init-from", help="a Molmo2-format model folder to start from (the previous stage's final/)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--log", help="tensorboard (default), wandb, or tensorboard,wandb: where the numbers go")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")


def config_from_args(args: argparse.Namespace):
    from .training.checkpoint import run_folder_of
    from .training.config import load_config

    overrides = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    base = args.config or (f"stage{args.stage}" if args.stage is not None else None)
    if args.resume_from:  # resuming: the run's own config unless one is given, and its own folder unless told
        run_folder = run_folder_of(args.resume_from)
        if base is None and (run_folder / "config.json").is_file():
            base = run_folder / "config.json"
        overrides.setdefault("out_dir", str(run_folder))
    if base is None:
        raise SystemExit("nanomolmo2 train: give --config (a TOML file or packaged name) or --stage N")
    config = load_config(base, overrides)
    if args.stage is not None and config.stage != args.stage:
        raise SystemExit(
            f"nanomolmo2 train: --stage {args.stage}, but config {args.config} is for stage {config.stage}"
        )
    if args.learning_rate is not None:
        scale = args.learning_rate / config.lr_llm if config.lr_llm else 1.0
        config.lr_llm = args.learning_rate
        config.lr_vision *= scale
        config.lr_connector *= scale
    return config


def run(args: argparse.Namespace) -> None:
    from .training.trainer import run as train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = train(config_from_args(args))
    if metrics and os.environ.get("RANK", "0") == "0":
        print(f"done: step {metrics['step']}, loss {metrics['loss']:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nanomolmo2 train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    from .errors import run_command

    run_command("nanomolmo2 train", run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
