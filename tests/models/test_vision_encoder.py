"""VisionEncoder against transformers' SigLIP and CLIP vision towers, and its frozen mode."""

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel
from transformers.models.molmo2.image_processing_molmo2 import batch_pixels_to_patches

from nanomolmo2.models import VisionConfig, VisionEncoder

from .reference import randomize

TOL = 1e-4
TOWERS = {
    "siglip": (SiglipVisionModel, SiglipVisionConfig, dict(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)),
    "clip": (CLIPVisionModel, CLIPVisionConfig, dict(hidden_act="quick_gelu", layer_norm_eps=1e-5)),
}


def tower(kind, tmp_path, num_layers=5):
    model_cls, config_cls, extra = TOWERS[kind]
    config = config_cls(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
        **extra,
    )
    torch.manual_seed(0)
    hf = randomize(model_cls(config)).eval()
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("kind", ["siglip", "clip"])
def test_hidden_states_match_transformers(kind, tmp_path):
    hf = tower(kind, tmp_path)
    ours = VisionEncoder.from_pretrained(tmp_path, feature_layers=(-1,)).eval()
    images = torch.rand(3, 3, 56, 56) * 2 - 1  # [B, C, H, W] in [-1, 1]
    patches = batch_pixels_to_patches(images.permute(0, 2, 3, 1), 14)  # Molmo2's patchify: [B, 16, 588]
    with torch.no_grad():
        expected = hf(pixel_values=images, output_hidden_states=True).hidden_states[1:]
        got = ours.hidden_states(patches)
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= TOL


def test_only_needed_blocks_are_built_and_features_concatenate(tmp_path):
    hf = tower("siglip", tmp_path, num_layers=6)
    ours = VisionEncoder.from_pretrained(tmp_path, feature_layers=(-3, -5)).eval()  # blocks 3 and 1 of 6
    assert len(ours.blocks) == 4
    images = torch.rand(2, 3, 56, 56) * 2 - 1
    patches = batch_pixels_to_patches(images.permute(0, 2, 3, 1), 14)
    with torch.no_grad():
        states = hf(pixel_values=images, output_hidden_states=True).hidden_states
        features = ours(patches)
    expected = torch.cat([states[4], states[2]], dim=-1)
    assert features.shape == (2, 16, 64)
    assert (features - expected).abs().max() <= TOL


def test_clip_vit_l14_336_shape():
    """Molmo v1's CLIP ViT-L/14-336: 24 blocks, and the last layer is [B, 577 = 1 CLS + 576 patches, 1024]."""
    config = VisionConfig.clip_vit_l14_336()
    config.feature_layers = (-1,)
    encoder = VisionEncoder(config).freeze()
    assert len(encoder.blocks) == 24
    patches = torch.rand(2, 576, 588)
    assert encoder(patches).shape == (2, 577, 1024)


def test_freeze_keeps_no_gradients_or_activations():
    encoder = VisionEncoder(VisionConfig.tiny()).freeze()
    encoder.train()  # a training loop calls model.train(): a frozen encoder stays in eval mode
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())
    patches = torch.rand(2, 16, 588, requires_grad=True)
    out = encoder(patches)
    assert out.grad_fn is None  # ran under no_grad: no graph, no saved activations


def test_siglip_full_model_folder_ignores_text_tower(tmp_path):
    """A full SigLIP (vision + text) folder loads its vision tower; the text weights are known and skipped."""
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, image_size=28
        ),
        text_config=dict(
            hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, vocab_size=99
        ),
    )
    SiglipModel(config).save_pretrained(tmp_path)
    encoder = VisionEncoder.from_pretrained(tmp_path)
    assert encoder.config.num_layers == 3 and encoder.config.image_size == 28
