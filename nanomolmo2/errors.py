"""User mistakes end a command with one line and exit status 2, not a traceback.

A wrong path, an unknown config key, a checkpoint that does not fit the model, a run folder held by another run:
the error's message says what and where; a traceback would only bury it. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UsageError(ValueError):
    """A command asked for something that cannot be done: bad flags, an unknown dataset, a folder in the wrong place."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the user asked for something that cannot be done"."""
    from .data.tokenizer import TokenizerError
    from .data.video_io import VideoError
    from .formats.weights import CheckpointError
    from .training.config import ConfigError
    from .training.run_folder import RunFolderError

    return (
        UsageError,
        ConfigError,
        CheckpointError,
        RunFolderError,
        TokenizerError,
        VideoError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    )


def run_command(prog: str, run: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """`run(args)`; a user mistake is printed as `prog: error: message` and exits with status 2."""
    try:
        run(args)
    except user_errors() as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
