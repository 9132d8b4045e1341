"""The vision encoder: a ViT on patchified crops that returns intermediate-layer features.

Input is already cut into patches, `[crops, patches, patch_size * patch_size * 3]` (pixel order: row,
column, channel), exactly what Molmo2's processor produces: floats in [-1, 1], or the uint8 pixels before
that step (training: 4x less to move), normalised here, on the device, to the same floats. A Linear patch
embedding (a conv kernel in SigLIP/CLIP checkpoints, reshaped on load) plus a learned position embedding,
then pre-norm blocks.

Two flavours, chosen by the config:
- Molmo2 / SigLIP (default): no class token, gelu-tanh, LayerNorm eps 1e-6;
- CLIP ViT-L/14-336 (Molmo v1): a class token, a pre-LayerNorm, quick-gelu -> `[B, 577, 1024]`.

Only the blocks up to the deepest feature layer are built and run (Molmo2 reads blocks 24 and 18 of 27).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.hf import hf_vision_config, hf_vision_state_to_ours, vision_keys
from ..formats.hub import read_checkpoint
from ..formats.molmo2 import molmo2_vision
from ..formats.weights import load_state_strict
from .config import VisionConfig


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu}


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixel values -> float32 in [-1, 1]: x/255*2-1, in the order transformers computes it."""
    return (pixels.float() - 127.5) / 127.5


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """`[side * side, dim]` fixed 2D sine-cosine position codes (half the channels for rows, half for columns)."""
    quarter = dim // 4
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter) / max(quarter, 1)))  # [dim/4]
    rows, cols = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    codes = []
    for position in (rows.flatten(), cols.flatten()):
        angles = position[:, None] * frequencies  # [side*side, dim/4]
        codes += [angles.sin(), angles.cos()]
    grid = torch.cat(codes, dim=1)  # [side*side, 4 * (dim/4)]
    return torch.nn.functional.pad(grid, (0, dim - grid.shape[1]))


class VisionBlock(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.qkv_proj = nn.Linear(d, 3 * d)
        self.o_proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(d, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, d)
        self.act = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv_proj(self.norm1(x)).view(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, hd]
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(B, N, D))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embed = nn.Linear(config.patch_dim, d, bias=config.patch_bias)
        num_positions = config.num_patches + int(config.use_cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(num_positions, d))
        if config.use_cls_token:
            self.cls_embed = nn.Parameter(torch.zeros(d))
            self.pre_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.num_built_layers))
        self.frozen = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A from-scratch initialisation (pretrained weights replace it): fan-in scaled Linear layers, so
        activations keep their scale through the blocks, and 2D sine-cosine position embeddings, so that
        even a frozen random encoder tells every token where its patch is (what pointing needs)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            grid = sincos_2d(self.config.patches_per_side, self.config.hidden_size)
            self.pos_embed[-grid.shape[0] :] = grid  # after the class token, if there is one
            if self.config.use_cls_token:
                nn.init.normal_(self.cls_embed, std=1.0)
                self.pos_embed[0].zero_()

    @property
    def feature_dim(self) -> int:
        return self.config.hidden_size * len(self.config.feature_layers)

    def freeze(self) -> VisionEncoder:
        """Eval mode, no gradients, and forward under no_grad so no activations are kept."""
        self.frozen = True
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> VisionEncoder:
        return super().train(mode and not self.frozen)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """`[crops, patches, patch_dim]` -> features `[crops, tokens, hidden * len(feature_layers)]`.

        tokens = patches, plus one leading class token for CLIP.
        """
        if self.frozen:
            with torch.no_grad():
                return self._features(patches)
        return self._features(patches)

    def _embed(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.dtype == torch.uint8:
            patches = normalize_pixels(patches)
        x = self.patch_embed(patches.to(self.patch_embed.weight.dtype))  # [C, N, D]
        if not self.config.use_cls_token:
            return x + self.pos_embed
        cls = self.cls_embed.expand(x.shape[0], 1, -1)
        return self.pre_norm(torch.cat([cls, x], dim=1) + self.pos_embed)  # [C, 1 + N, D]

    def _features(self, patches: torch.Tensor) -> torch.Tensor:
        wanted = self.config.resolved_feature_layers
        x, outputs = self._embed(patches), {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                outputs[i] = x
        return torch.cat([outputs[i] for i in wanted], dim=-1)

    def hidden_states(self, patches: torch.Tensor) -> list[torch.Tensor]:
        """Output of every built block, `[crops, tokens, hidden]` each (for inspection and tests)."""
        x, states = self._embed(patches), []
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        feature_layers: tuple[int, ...] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> VisionEncoder:
        """Load the ViT of a Molmo2 folder, or a Hugging Face SigLIP / CLIP vision folder (or their Hub ids)."""
        folder, cfg, weights = read_checkpoint(path, lambda cfg: vision_keys(cfg, feature_layers))
        if cfg.get("model_type") == "molmo2":
            config, state = molmo2_vision(cfg, weights, feature_layers)
        else:
            config = hf_vision_config(cfg, feature_layers)
            state = hf_vision_state_to_ours(weights, config)
        encoder = cls(config)
        load_state_strict(encoder, state, f"vision checkpoint {folder}")
        return encoder.to(dtype)
