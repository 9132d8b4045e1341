"""bf16 without fp32 leaks: under autocast every activation of the decoder stays bf16 (RMSNorm casts its weight, not
the activations; the residual stream and RoPE follow the autocast dtype), while the norm itself is computed in fp32."""

import pytest
import torch
import torch.nn.functional as F

from nanomolmo2.models import LanguageModel, LanguageModelConfig
from nanomolmo2.models import language_model as language_model_module
from nanomolmo2.models.language_model import RMSNorm


def test_rmsnorm_computes_in_fp32_and_returns_the_input_dtype():
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 64).to(torch.bfloat16) * 30
    x32 = x.float()
    normed = (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    expected = norm.weight.detach().to(torch.bfloat16) * normed
    got = norm(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    assert norm(x32).dtype == torch.float32


@pytest.mark.parametrize("segments", [False, True], ids=["causal", "masked"])
def test_every_activation_is_bf16_under_autocast(monkeypatch, segments):
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig.tiny(vocab_size=1000))  # fp32 master weights, as in training
    seen = []  # (module or kernel, dtype of each floating-point tensor it produced or received)

    def record(module, args, output):
        seen.append((type(module).__name__, output.dtype))

    for module in model.modules():
        if module is not model and not isinstance(module, torch.nn.ModuleList):
            module.register_forward_hook(record)
    sdpa = F.scaled_dot_product_attention

    def recording_sdpa(q, k, v, **kwargs):
        seen.extend(("sdpa input", t.dtype) for t in (q, k, v))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(language_model_module.F, "scaled_dot_product_attention", recording_sdpa)
    ids = torch.randint(0, 1000, (2, 24))
    extra = {"segment_ids": torch.tensor([[0] * 10 + [1] * 14, [0] * 24])} if segments else {}
    labels = ids.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=labels, **extra)
    out.loss.backward()
    floating = [(name, dtype) for name, dtype in seen if dtype.is_floating_point and name != "TokenEmbedding"]
    assert {name for name, _ in floating} >= {"RMSNorm", "Attention", "MLP", "DecoderBlock", "sdpa input", "Linear"}
    assert all(dtype == torch.bfloat16 for _, dtype in floating), sorted(set(floating))
    assert out.hidden_states.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert model.layers[0].attn.qkv_proj.weight.grad.dtype == torch.float32  # master weights and grads stay fp32
