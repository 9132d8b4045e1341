"""The language model: a Qwen3 decoder in plain PyTorch.

Per block: RMSNorm -> grouped-query attention (fused q/k/v projection, per-head q/k RMSNorm before RoPE,
`F.scaled_dot_product_attention`, or FlexAttention in training when `attention = "flex"`, see flex.py) ->
residual -> RMSNorm -> SwiGLU MLP -> residual (each output through Molmo2's residual dropout, when training with it
on); under autocast every activation is in the autocast dtype.
The embedding table has 128 extra rows for the Molmo2 special tokens; the output head covers only the base
vocabulary (or the restricted output vocabulary of output_vocabulary.py). `forward` with labels returns the
loss (loss.py). `LanguageModel.from_pretrained(dir)` reads a Hugging Face Qwen3 folder (e.g. Qwen/Qwen3-0.6B).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.hf import qwen3_config, qwen3_state_to_ours
from ..formats.hub import read_checkpoint
from ..formats.weights import load_state_strict
from ..tokens import IGNORE_INDEX
from .attention import KVCache, attention_rule, build_attention_mask
from .config import LanguageModelConfig
from .flex import BlockMask, block_mask, flex
from .loss import causal_lm_loss
from .output_vocabulary import OutputVocabulary

# Devices on which masked attention repeats the kv heads instead of passing enable_gqa (see Attention).
# The CPU kernel handles a mask with grouped-query attention itself.
REPEAT_KV_WITH_MASK = ("cuda",)


@dataclass
class ModelOutput:
    logits: torch.Tensor | None  # [B, L, vocab]; with labels [N, vocab] at the N loss positions (or None)
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # [B, L, D] after the final norm


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 whatever the input dtype (as Qwen3 does); returns the input dtype
    (the weight is cast to it, so bf16 activations stay bf16)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return self.weight.to(x.dtype) * x32.to(x.dtype)


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for `[B, L]` positions -> cos, sin `[B, 1, L, head_dim]` (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float) / head_dim))
    freqs = position_ids[..., None].float() * inv_freq  # [B, L, head_dim/2]
    angles = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, L, head_dim]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class TokenEmbedding(nn.Module):
    """The base vocabulary's table plus a separate one for the 128 Molmo2 special tokens (as Molmo2 stores
    them: `wte.embedding` + `wte.new_embedding`), so that the new rows can train in their own optimizer group."""

    def __init__(self, vocab_size: int, additional_vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))
        self.new_weight = nn.Parameter(torch.empty(additional_vocab_size, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vocab = self.weight.shape[0]
        base = F.embedding(ids.clamp(max=vocab - 1), self.weight)
        if self.new_weight.shape[0] == 0:
            return base
        new = F.embedding((ids - vocab).clamp(min=0), self.new_weight)
        return torch.where((ids < vocab)[..., None], base, new)


class Attention(nn.Module):
    def __init__(self, config: LanguageModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        qkv_size = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, qkv_size, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask: torch.Tensor | BlockMask | None, cache: KVCache | None) -> torch.Tensor:
        B, L, _ = x.shape
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = self.q_norm(q.view(B, L, self.num_heads, self.head_dim)).transpose(1, 2)  # [B, H, L, hd]
        k = self.k_norm(k.view(B, L, self.num_kv_heads, self.head_dim)).transpose(1, 2)  # [B, KV, L, hd]
        v = v.view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if isinstance(mask, BlockMask):
            return self.o_proj(flex(q, k, v, mask).transpose(1, 2).reshape(B, L, q_size))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer_idx, k, v)
        # is_causal aligns the mask top-left, which is only right when no keys come from the cache.
        is_causal = mask is None and past == 0 and L > 1
        if mask is None and past > 0 and L > 1:
            mask = build_attention_mask(L, past + L, attention_mask=torch.ones(B, past + L, device=x.device))
        gqa = self.num_kv_heads != self.num_heads
        if gqa and mask is not None and q.device.type in REPEAT_KV_WITH_MASK:
            # CUDA's fused kernels do not take a mask together with enable_gqa: SDPA would fall back to the
            # math kernel, which stores [B, heads, L, L] fp32 scores (87 GB per layer at 36,864 tokens).
            # Repeated k/v heads let the memory-efficient / cuDNN kernels take the mask (same numbers).
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            gqa = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, q_size))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); up and gate share one matmul (stored [up; gate] as Molmo2 does)."""

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        self.up_gate_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = self.up_gate_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ResidualDropout(nn.Module):
    """Molmo2's residual dropout (olmo/nn/llm.py, `Dropout`), read from the config at every call so the trainer
    can set it on a loaded model: drop with `residual_dropout` everywhere, or with `response_residual_dropout`
    at the `[B, L]` response positions and `residual_dropout` elsewhere; kept values are scaled by 1 / keep."""

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor, response_mask: torch.Tensor | None) -> torch.Tensor:
        p, response_p = self.config.residual_dropout, self.config.response_residual_dropout
        if not self.training or (p == 0 and response_p == 0):
            return x
        if response_p == 0 or response_mask is None:
            return F.dropout(x, p, training=True)
        keep = torch.where(response_mask, 1.0 - response_p, 1.0 - p)[..., None].to(x.dtype)  # [B, L, 1]
        return x * torch.bernoulli(keep.expand_as(x)) / keep


class DecoderBlock(nn.Module):
    def __init__(self, config: LanguageModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        self.dropout = ResidualDropout(config)

    def forward(self, x, cos, sin, mask, cache, response_mask=None):
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, mask, cache), response_mask)
        return x + self.dropout(self.mlp(self.mlp_norm(x)), response_mask)


class LanguageModel(nn.Module):
    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = TokenEmbedding(config.vocab_size, config.additional_vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderBlock(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = (
            None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self.gradient_checkpointing = False
        self.attention = "sdpa"  # or "flex": FlexAttention with a block mask, where there is no KV cache
        self.output_vocabulary = OutputVocabulary(config.output_token_ids, config.vocab_size)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, TokenEmbedding):
                nn.init.normal_(module.weight, std=std)
                nn.init.normal_(module.new_weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    @property
    def head_weight(self) -> torch.Tensor:
        """`[vocab, D]` (or the restricted vocabulary's rows): the output head, the embedding table when tied."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return self.output_vocabulary.head(weight)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`[..., vocab]` logits; tokens outside a restricted output vocabulary get -inf."""
        return self.output_vocabulary.full_logits(hidden @ self.head_weight.t())

    def hidden_states(
        self,
        inputs_embeds: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        annotation_ids: torch.Tensor | None = None,
        vision_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        response_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the decoder on `[B, L, D]` embeddings; return the final-normed hidden states `[B, L, D]`.

        position_ids: `[B, L]` (default: consecutive, after what the cache holds).
        attention_mask: `[B, past + L]`, 1 for real tokens, 0 for padding.
        segment_ids: `[B, L]` example ids of packed sequences (tokens attend only within their example).
        annotation_ids: `[B, L]` 0 on an example's shared prefix, k on its k-th annotation (which sees
            the prefix and itself only).
        vision_mask: `[B, L]` True at vision tokens, which attend to each other bidirectionally.
        response_mask: `[B, L]` True where the next token carries loss (for `response_residual_dropout`).
        """
        B, L, _ = inputs_embeds.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + L, device=inputs_embeds.device).expand(B, L)
        if past and (segment_ids is not None or annotation_ids is not None):
            raise ValueError("segment_ids / annotation_ids (packing) cannot be combined with a KV cache")
        ids = dict(attention_mask=attention_mask, segment_ids=segment_ids, annotation_ids=annotation_ids,
                   vision_mask=None if vision_mask is None else _left_pad(vision_mask, past))  # fmt: skip
        if self.attention == "flex" and cache is None and (rule := attention_rule(**ids)) is not None:
            mask = block_mask(rule, B, L, inputs_embeds.device)  # built once, used by every layer
        else:
            mask = build_attention_mask(L, past + L, **ids, device=inputs_embeds.device)
        x = inputs_embeds
        if torch.is_autocast_enabled(x.device.type):  # the residual stream in bf16 too, not fp32 around bf16 matmuls
            x = x.to(torch.get_autocast_dtype(x.device.type))
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        for block in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(
                    block, x, cos, sin, mask, cache, response_mask, use_reentrant=False
                )
            else:
                x = block(x, cos, sin, mask, cache, response_mask)
        if cache is not None:
            cache.advance(L)
        return self.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
        z_loss_weight: float = 0.0,
        loss_normalizer: float | torch.Tensor | None = None,
        return_logits: bool = True,
        loss_positions: torch.Tensor | None = None,
        **decoder_kwargs,
    ) -> ModelOutput:
        """Logits `[B, L, vocab]`; with `labels`, the loss and the logits at the loss positions only."""
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if labels is not None and self.training and self.config.response_residual_dropout:
            # position i predicts token i + 1: it is a response position when that token carries loss
            decoder_kwargs["response_mask"] = F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1))
        hidden = self.hidden_states(inputs_embeds, **decoder_kwargs)
        if labels is None:
            return ModelOutput(logits=self.logits(hidden), hidden_states=hidden)
        loss, logits = causal_lm_loss(
            hidden,
            self.output_vocabulary.rows(labels),
            self.head_weight,
            loss_weights=loss_weights,
            z_loss_weight=z_loss_weight,
            normalizer=loss_normalizer,
            return_logits=return_logits,
            loss_positions=loss_positions,
        )
        return ModelOutput(logits=logits, loss=loss, hidden_states=hidden)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> LanguageModel:
        """Load a Hugging Face Qwen3 folder (config.json + safetensors, sharded or not) or Hub id (Qwen/Qwen3-0.6B)."""
        folder, cfg, weights = read_checkpoint(path)
        model = cls(qwen3_config(cfg))
        state = qwen3_state_to_ours(weights, model.config)
        state["embed_tokens.new_weight"] = model.embed_tokens.new_weight.detach().clone()  # Qwen3 has no Molmo2 rows
        load_state_strict(model, state, f"Qwen3 checkpoint {folder}")
        return model.to(dtype)


def _left_pad(mask: torch.Tensor, past: int) -> torch.Tensor:
    """Extend a `[B, L]` per-token flag to `[B, past + L]` (cached tokens: False)."""
    if past == 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], past), mask], dim=1)
