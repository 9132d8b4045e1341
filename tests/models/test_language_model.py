"""LanguageModel against transformers' Qwen3ForCausalLM, plus the KV cache, packing, padding and the loss."""

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen3Config, Qwen3ForCausalLM

from nanomolmo2.models import LanguageModel, LanguageModelConfig
from nanomolmo2.models.attention import KVCache, build_attention_mask

from .reference import randomize

TOL = 1e-4


def qwen3_reference(tmp_path, tie: bool, **overrides):
    config = dict(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA
        head_dim=24,  # != hidden / heads
        max_position_embeddings=512,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        tie_word_embeddings=tie,
    )
    config.update(overrides)
    torch.manual_seed(0)
    hf = randomize(Qwen3ForCausalLM(Qwen3Config(**config))).eval()
    if tie:
        hf.tie_weights()
    hf.save_pretrained(tmp_path)
    return hf, LanguageModel.from_pretrained(tmp_path).eval()


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_logits_match_qwen3(tmp_path, tie):
    hf, ours = qwen3_reference(tmp_path, tie)
    assert ours.config.tie_word_embeddings == tie and ours.config.head_dim == 24
    ids = torch.randint(0, 1000, (2, 33), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = hf(ids).logits, ours(ids).logits
    assert got.shape == (2, 33, 1000)
    assert (got - expected).abs().max() <= TOL
    assert expected.abs().max() > 1  # a meaningful comparison, not two near-zero tensors


def test_loss_and_logits_at_loss_positions_match_qwen3(tmp_path):
    hf, ours = qwen3_reference(tmp_path, tie=True)
    ids = torch.randint(0, 1000, (2, 20), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[0, :12] = -100
    labels[1, :5] = -100
    with torch.no_grad():
        expected = hf(ids, labels=labels)
        got = ours(ids, labels=labels)
    keep = labels[:, 1:] != -100
    assert got.logits.shape == (int(keep.sum()), 1000)
    assert (got.logits - expected.logits[:, :-1][keep]).abs().max() <= TOL
    assert abs(got.loss.item() - expected.loss.item()) <= TOL


def test_loss_weights_z_loss_and_normalizer(tmp_path):
    _, ours = qwen3_reference(tmp_path, tie=True)
    ids = torch.randint(0, 1000, (1, 10), generator=torch.Generator().manual_seed(3))
    weights = torch.rand(1, 10)
    with torch.no_grad():
        logits = ours(ids).logits[0, :-1]
        out = ours(ids, labels=ids, loss_weights=weights, z_loss_weight=1e-2, loss_normalizer=4.0)
    ce = F.cross_entropy(logits, ids[0, 1:], reduction="none")
    z = torch.logsumexp(logits, -1).square()
    expected = ((ce + 1e-2 * z) * weights[0, 1:]).sum() / 4.0
    assert abs(out.loss.item() - expected.item()) <= 1e-5


def test_real_vocabulary_shape():
    """Logits cover the full 151,936-token vocabulary; the 128 new rows are embeddings only."""
    model = LanguageModel(LanguageModelConfig.tiny())
    assert model.embed_tokens.weight.shape[0] == 151936 and model.embed_tokens.new_weight.shape[0] == 128
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 151936)


def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(0)
    model = randomize(LanguageModel(LanguageModelConfig.tiny(vocab_size=500))).eval()
    ids = torch.randint(0, 500, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(model.config, batch_size=2, max_len=12)
        steps = [model(ids[:, :5], cache=cache).logits]  # a prefill chunk, then one token at a time
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(5, 12)]
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4  # logits of magnitude ~8: fp32 rounding only


def test_packed_sequences_equal_separate_runs():
    torch.manual_seed(0)
    model = randomize(LanguageModel(LanguageModelConfig.tiny(vocab_size=500))).eval()
    a, b, c = torch.randint(0, 500, (7,)), torch.randint(0, 500, (4,)), torch.randint(0, 500, (5,))
    packed = torch.cat([a, b, c])[None]
    segment_ids = torch.tensor([[0] * 7 + [1] * 4 + [2] * 5])
    position_ids = torch.cat([torch.arange(7), torch.arange(4), torch.arange(5)])[None]
    with torch.no_grad():
        together = model(packed, segment_ids=segment_ids, position_ids=position_ids).logits[0]
        alone = torch.cat([model(x[None]).logits[0] for x in (a, b, c)])
    assert (together - alone).abs().max() <= 1e-5


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = randomize(LanguageModel(LanguageModelConfig.tiny(vocab_size=500))).eval()
    ids = torch.randint(0, 500, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)  # right padding
    mask = torch.tensor([[1] * 6 + [0] * 3])
    left = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)  # left padding, positions from 0
    left_mask = torch.tensor([[0] * 3 + [1] * 6])
    left_pos = (left_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(ids).logits
        right_out = model(padded, attention_mask=mask).logits
        left_out = model(left, attention_mask=left_mask, position_ids=left_pos).logits
    assert torch.isfinite(right_out).all() and torch.isfinite(left_out).all()
    assert (right_out[:, :6] - ref).abs().max() <= 1e-5
    assert (left_out[:, 3:] - ref).abs().max() <= 1e-5


def test_attention_mask_rules():
    # Tokens 1-3 are vision; two packed examples: [0..3] and [4, 5].
    vision = torch.tensor([[0, 1, 1, 1, 0, 0]]).bool()
    segments = torch.tensor([[0, 0, 0, 0, 1, 1]])
    mask = build_attention_mask(6, 6, vision_mask=vision, segment_ids=segments)[0, 0]
    assert mask[1, 3] and mask[3, 1]  # vision block: both directions
    assert not mask[0, 1]  # text before the block stays causal
    assert mask[3, 0] and not mask[4, 3]  # segments do not see each other
    assert mask[5, 4] and not mask[4, 5]
    assert build_attention_mask(6, 6) is None  # plain causal: SDPA's fast path


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = randomize(LanguageModel(LanguageModelConfig.tiny(vocab_size=500)))
    ids = torch.randint(0, 500, (2, 9))
    model(ids, labels=ids).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(ids, labels=ids).loss.backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(plain, model.parameters(), strict=True))


def test_sharded_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    hf = randomize(
        Qwen3ForCausalLM(
            Qwen3Config(
                vocab_size=300,
                hidden_size=32,
                intermediate_size=48,
                num_hidden_layers=3,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                tie_word_embeddings=False,
            )
        )
    ).eval()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = LanguageModel.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert (ours(ids).logits - hf(ids).logits).abs().max() <= TOL


def test_chunked_loss_equals_the_plain_one(monkeypatch):
    """Above the logits budget the loss is computed in recomputed chunks: same loss, same gradients."""
    import nanomolmo2.models.loss as loss_module

    torch.manual_seed(0)
    model = randomize(LanguageModel(LanguageModelConfig.tiny(vocab_size=500)))
    ids = torch.randint(0, 500, (2, 40))
    plain = model(ids, labels=ids, z_loss_weight=1e-3)
    plain.loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(loss_module, "LOGITS_BUDGET", 500 * 10)  # 10 tokens' logits at a time
    chunked = model(ids, labels=ids, z_loss_weight=1e-3, return_logits=False)
    chunked.loss.backward()
    assert chunked.logits is None
    assert torch.allclose(chunked.loss, plain.loss, atol=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(expected, model.parameters(), strict=True))


def test_kv_cache_keeps_its_dtype_and_says_when_it_is_full():
    config = LanguageModelConfig.tiny(vocab_size=50)
    cache = KVCache(config, batch_size=1, max_len=4, dtype=torch.bfloat16)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16
    k = torch.zeros(1, config.num_kv_heads, 5, config.head_dim, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="KV cache is full: 5 tokens > max_len 4"):
        cache.update(0, k, k)
