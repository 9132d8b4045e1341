"""The `nanomolmo2` command: one entry point, one subcommand per job.

    nanomolmo2 synth --out DIR --images N --seed S          write ShapesWorld data (built-in, no downloads)
    nanomolmo2 train --stage 1 --config FILE ...             train one stage (also: python -m nanomolmo2.train)
    nanomolmo2 generate --checkpoint DIR --image F --prompt  answer one question (draws points with --out)
    nanomolmo2 chat --checkpoint DIR --image F [--video V]   a conversation in the terminal, answers streamed
    nanomolmo2 serve --checkpoint DIR                        a web demo (Gradio: the `demo` extra)
    nanomolmo2 eval --checkpoint DIR --data DIR              Molmo2's metrics on a held-out folder
    nanomolmo2 prepare DATASET --from TABLE --out DIR        a Hugging Face table -> JSONL, fetching its media
    nanomolmo2 explain IMAGE_OR_VIDEO [--model tiny]         a guided tour of one forward pass, with pictures

Each subcommand lives next to the code it runs and provides an `add_arguments(parser)` and a `run(args)`.
"""

from __future__ import annotations

import argparse

from . import serve, train
from .errors import run_command
from .eval import chat, commands
from .explain import command as explain
from .prepare import command as prepare
from .shapesworld import command as synth

SUBCOMMANDS = {
    "synth": (synth.add_arguments, synth.run, "write the built-in ShapesWorld dataset (images, videos, masks)"),
    "train": (train.add_arguments, train.run, "train one stage of nanoMolmo2"),
    "generate": (commands.add_generate_arguments, commands.run_generate, "answer a prompt about an image or video"),
    "chat": (chat.add_arguments, chat.run, "talk with a model about images or a video, in the terminal"),
    "serve": (serve.add_arguments, serve.run, "a web demo: upload an image or a video, ask, see the points"),
    "eval": (commands.add_eval_arguments, commands.run_eval, "Molmo2's metrics on a held-out folder with masks"),
    "prepare": (prepare.add_arguments, prepare.run, "a Hugging Face dataset table -> JSONL, fetching its media"),
    "explain": (explain.add_arguments, explain.run, "walk one image or video through the model, stage by stage"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nanomolmo2", description=__doc__.split("\n")[0])
    commands_parser = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in SUBCOMMANDS.items():
        add_arguments(commands_parser.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    run_command(f"nanomolmo2 {args.command}", SUBCOMMANDS[args.command][1], args)


if __name__ == "__main__":
    main()
