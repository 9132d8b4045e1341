"""The `nanomolmo2` command: one entry point, one subcommand per job.

    nanomolmo2 synth --out DIR --images N --seed S     write ShapesWorld data (built-in, no downloads)
    nanomolmo2 train --stage 1 --config FILE ...        train one stage (also: python -m nanomolmo2.train)

Each subcommand lives next to the code it runs and exposes `add_arguments(parser)` and `run(args)`.
"""

from __future__ import annotations

import argparse

from . import train
from .data import synthetic

SUBCOMMANDS = {
    "synth": (synthetic, "write the built-in ShapesWorld dataset (images, videos, masks, JSONL)"),
    "train": (train, "train one stage of nanoMolmo2"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nanomolmo2", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    SUBCOMMANDS[args.command][0].run(args)


if __name__ == "__main__":
    main()
