"""Key conversions shared by the checkpoint formats: rename by prefix tables, fuse projections, drop keys.

A table is a list of (source prefix, target prefix) pairs; `{i}` in a prefix matches a layer number. Our
modules keep q/k/v (and up/gate) in one fused matmul, so formats that store them apart are concatenated.
"""

from __future__ import annotations

import re
from functools import cache

import torch

KeyTable = list[tuple[str, str]]


@cache
def _prefix_regex(prefix: str) -> re.Pattern:
    return re.compile("^" + re.escape(prefix).replace(r"\{i\}", r"(\d+)") + "(.*)$")


def rename_keys(state: dict[str, torch.Tensor], table: KeyTable) -> dict[str, torch.Tensor]:
    """Rename every key by the first matching (source prefix, target prefix) pair; others stay as they are."""
    out = {}
    for key, value in state.items():
        for src, dst in table:
            match = _prefix_regex(src).match(key)
            if match:
                *layer, rest = match.groups()
                key = dst.replace("{i}", layer[0]) + rest if layer else dst + rest
                break
        out[key] = value
    return out


def reverse(table: KeyTable) -> KeyTable:
    return [(dst, src) for src, dst in table]


def fuse(state: dict, scope: str, parts: tuple[str, ...], fused: str) -> dict:
    """Concatenate `<p>.<part>.<kind>` (dim 0, in `parts` order) into `<p>.<fused>.<kind>` for keys under `scope`."""
    out = dict(state)
    marker = f".{parts[0]}."
    for key in [k for k in state if k.startswith(scope) and marker in k]:
        prefix, kind = key.rsplit(marker, 1)
        names = [f"{prefix}.{p}.{kind}" for p in parts]
        if all(n in out for n in names):
            out[f"{prefix}.{fused}.{kind}"] = torch.cat([out.pop(n) for n in names])
    return out


def split_fused(state: dict, scope: str, fused: str, parts: tuple[str, ...]) -> dict:
    """The inverse of `fuse`: `<p>.<fused>.<kind>` under `scope` -> equal dim-0 chunks `<p>.<part>.<kind>`."""
    out = dict(state)
    for key in [k for k in state if k.startswith(scope) and f".{fused}." in k]:
        prefix, kind = key.rsplit(f".{fused}.", 1)
        for name, chunk in zip(parts, out.pop(key).chunk(len(parts)), strict=True):
            out[f"{prefix}.{name}.{kind}"] = chunk
    return out


def drop_keys(state: dict, patterns: list[str]) -> dict:
    """Remove keys matching any regex: weights a format carries that our model does not use."""
    return {k: v for k, v in state.items() if not any(re.match(p, k) for p in patterns)}


def unused_vision_blocks(prefix: str, built: int) -> str:
    """Regex for ViT blocks numbered >= `built`: full checkpoints have them, but no feature layer needs them."""
    return rf"^{re.escape(prefix)}(?!(?:{'|'.join(map(str, range(built)))})\.)\d+\."
