"""`python -m nanomolmo2 ...`: the same as the `nanomolmo2` command (cli.py)."""

from .cli import main

main()
