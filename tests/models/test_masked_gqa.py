"""The CUDA path of masked grouped-query attention (kv heads repeated, no enable_gqa) gives the same logits."""

import torch

from nanomolmo2.models import language_model
from nanomolmo2.models.config import NanoMolmo2Config
from nanomolmo2.models.nanomolmo2 import NanoMolmo2


def test_repeated_kv_heads_match_enable_gqa(monkeypatch):
    torch.manual_seed(0)
    model = NanoMolmo2(NanoMolmo2Config.tiny()).eval()
    assert model.config.llm.num_kv_heads < model.config.llm.num_heads
    ids = torch.randint(100, 5000, (2, 24))
    vision = torch.zeros(2, 24, dtype=torch.long)
    vision[:, 3:9] = 1  # a bidirectional block: the attention takes a mask
    segments = torch.tensor([[0] * 14 + [1] * 10, [0] * 24])
    with torch.no_grad():
        expected = model(ids, mm_token_type_ids=vision, segment_ids=segments).logits
        monkeypatch.setattr(language_model, "REPEAT_KV_WITH_MASK", ("cuda", "cpu"))
        got = model(ids, mm_token_type_ids=vision, segment_ids=segments).logits
    assert (got - expected).abs().max() <= 1e-5
