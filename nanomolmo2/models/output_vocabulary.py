"""A restricted output vocabulary: an output head that scores only some token ids (a CPU-demo speed-up).

A tiny model trained on a narrow dataset (ShapesWorld) answers with a few hundred distinct tokens, yet a
full Qwen3 head scores 151,936 of them for every loss token: most of a tiny model's compute. With
`LanguageModelConfig.output_token_ids` set, the head's rows are those tokens' rows of the embedding table
(or of `lm_head`), and every other token gets probability 0. With it empty, every method is the identity,
so the language model calls them unconditionally. The weights stay whole: the Molmo2 format keeps the full
head, and the restriction is stored in the config.
"""

from __future__ import annotations

import torch
from torch import nn

from ..tokens import IGNORE_INDEX


class OutputVocabulary(nn.Module):
    def __init__(self, token_ids: tuple[int, ...], vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.restricted = bool(token_ids)
        ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        index = torch.full((vocab_size,), -1, dtype=torch.long)
        index[ids] = torch.arange(len(ids))
        # Buffers, not parameters, and not saved: they follow from the config.
        self.register_buffer("ids", ids, persistent=False)  # head row k scores token ids[k]
        self.register_buffer("index", index, persistent=False)  # token id -> head row, -1 = not scored

    def head(self, weight: torch.Tensor) -> torch.Tensor:
        """`[vocab, D]` head weight -> the rows that are scored `[len(ids), D]`."""
        return weight[self.ids] if self.restricted else weight

    def rows(self, labels: torch.Tensor) -> torch.Tensor:
        """Token-id labels -> head rows (IGNORE_INDEX stays); a label the head cannot score is an error."""
        if not self.restricted:
            return labels
        rows = torch.where(labels == IGNORE_INDEX, IGNORE_INDEX, self.index[labels.clamp(0, self.vocab_size - 1)])
        missing = (rows == -1) & (labels != IGNORE_INDEX)
        if bool(missing.any()):
            raise ValueError(f"label token {int(labels[missing][0])} is not in the model's output vocabulary")
        return rows

    def token_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """Head rows (e.g. an argmax over the head's scores) -> token ids."""
        return self.ids[rows] if self.restricted else rows

    def full_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """`[..., len(ids)]` scores -> `[..., vocab]` logits, -inf for the tokens that are not scored."""
        if not self.restricted:
            return scores
        full = scores.new_full((*scores.shape[:-1], self.vocab_size), float("-inf"))
        full[..., self.ids] = scores
        return full
