"""The FLOP count of the trainer and bench/gpu.py (training/flops.py) against hand counts and the dense mask."""

import pytest
import torch

from nanomolmo2.models.attention import build_attention_mask
from nanomolmo2.models.config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig
from nanomolmo2.tokens import IGNORE_INDEX
from nanomolmo2.training.flops import attention_pairs, batch_flops


def test_attention_pairs_of_a_packed_row_counted_by_hand():
    """One row: example A = a 5-token prefix (tokens 1-2 vision) + annotations of 3 and 2 tokens, example B of 4
    tokens, 2 padding tokens."""
    segments = torch.tensor([[0] * 10 + [1] * 4 + [-1] * 2])
    annotations = torch.tensor([[0] * 5 + [1] * 3 + [2] * 2 + [0] * 4 + [0] * 2])
    vision = torch.tensor([[0, 1, 1, 0, 0] + [0] * 11]).bool()
    real = torch.tensor([[1] * 14 + [0] * 2])
    prefix = 5 * 6 // 2 + 1  # causal within the prefix, + the vision pair (1 -> 2) that looks ahead
    conversations = (3 * 5 + 3 * 4 // 2) + (2 * 5 + 2 * 3 // 2)  # each sees the prefix and itself, causally
    hand = prefix + conversations + 4 * 5 // 2 + 2  # + example B causal + each padded token sees itself
    assert hand == 62
    assert attention_pairs((1, 16), segments, annotations, vision, real) == hand
    mask = build_attention_mask(16, 16, segment_ids=segments, annotation_ids=annotations, vision_mask=vision,
                                attention_mask=real)  # fmt: skip
    assert int(mask.sum()) == hand


@pytest.mark.parametrize("seed", range(20))
def test_attention_pairs_equal_the_dense_mask_for_any_ids(seed):
    g = torch.Generator().manual_seed(seed)
    B, L = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
    ids = dict(
        segment_ids=torch.randint(-1, 3, (B, L), generator=g),  # not even contiguous
        annotation_ids=torch.randint(0, 3, (B, L), generator=g),
        vision_mask=torch.rand(B, L, generator=g) < 0.4,
        attention_mask=(torch.rand(B, L, generator=g) < 0.8).long(),
    )
    for names in (["segment_ids"], ["vision_mask"], ["annotation_ids", "attention_mask"], list(ids)):
        chosen = {n: ids[n] for n in names}
        assert attention_pairs((B, L), **chosen) == int(build_attention_mask(L, L, **chosen).sum()), names


def test_batch_flops_counted_by_hand_for_a_small_config():
    config = NanoMolmo2Config(
        llm=LanguageModelConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                head_dim=16, intermediate_size=128),
        vision=VisionConfig(image_size=28, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=48,
                            feature_layers=(-1,)),
        connector=ConnectorConfig.tiny(),
    )  # fmt: skip
    labels = torch.full((1, 6), IGNORE_INDEX)
    labels[0, 4:] = 7  # 2 loss tokens
    batch = {
        "input_ids": torch.zeros(1, 6, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]]),  # 5 real tokens
        "labels": labels,
        "segment_ids": torch.tensor([[0, 0, 0, 1, 1, -1]]),
        "mm_token_type_ids": torch.tensor([[0, 1, 1, 0, 0, 0]]),
        "pixel_values": torch.zeros(3, 4, 588, dtype=torch.uint8),  # 3 crops of 2x2 patches
    }
    # decoder per token: 6 x 2 layers x (q/k/v 64 x (4 + 2 x 2) x 16 + o 4 x 16 x 64 + MLP 3 x 64 x 128)
    decoder = 6 * 2 * (64 * 8 * 16 + 4 * 16 * 64 + 3 * 64 * 128)
    head = 6 * 64 * 1000  # per loss token
    pairs = 6 + 1 + 3 + 1  # example 0 causal (3 tokens) + the vision pair ahead, example 1 (2 tokens), padding
    attention = 12 * 2 * 4 * 16  # per pair
    vision = (
        2 * 3 * (4 * 32 * 32 + 2 * 32 * 48) * 4 + 4 * 3 * 32 * 4 * 4
    )  # ViT forward per crop: 2 x params x patches + attention
    want = 5 * decoder + 2 * head + pairs * attention + 3 * vision
    assert batch_flops(config, batch) == want
    assert batch_flops(config, {**batch, "loss_positions": torch.zeros(2, 2, dtype=torch.long)}) == want
    assert batch_flops(config, batch, vision_trained=True) == want + 2 * 3 * vision  # forward + backward
    config.llm.output_token_ids = (3, 7, 9)  # a restricted head scores 3 rows, not 1,000
    assert batch_flops(config, batch) == want - 2 * head + 2 * 6 * 64 * 3
