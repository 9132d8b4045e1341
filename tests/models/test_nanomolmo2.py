"""NanoMolmo2 on its own: connectors, composition from Molmo2 + Qwen3 folders, frozen training, overfitting."""

import pytest
import torch
from transformers import Molmo2ForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM

from nanomolmo2.models import Connector, ConnectorConfig, NanoMolmo2, NanoMolmo2Config, VisionConfig

from .reference import batch_inputs, image_inputs, randomize, tiny_molmo2_config


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_plain_connectors_average_valid_patches(kind):
    torch.manual_seed(0)
    connector = Connector(ConnectorConfig(kind=kind, projector_hidden_size=16), vision_dim=8, llm_dim=12)
    features = torch.randn(2, 4, 8)  # 2 crops x 4 patches
    pooling = torch.tensor([[0, 1, 4, -1], [7, -1, -1, -1], [-1, -1, -1, -1]])  # the last token is dropped
    out = connector(features, pooling)
    flat = features.reshape(-1, 8)
    expected = connector.projector(torch.stack([flat[[0, 1, 4]].mean(0), flat[7]]))
    assert out.shape == (2, 12)
    assert torch.allclose(out, expected, atol=1e-6)


def tiny_config(**connector) -> NanoMolmo2Config:
    config = NanoMolmo2Config.tiny()
    config.vision.image_size = 42  # 3x3 patches per crop, matching the reference inputs
    config.connector = ConnectorConfig(**{**vars(ConnectorConfig.tiny()), **connector})
    return config


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_teaching_connectors_and_clip_round_trip(kind, tmp_path):
    """Options outside the Molmo2 format (plain connectors, a CLIP-style ViT) still save and load exactly."""
    config = tiny_config(kind=kind)
    config.vision = VisionConfig(**{**vars(config.vision), "use_cls_token": True, "activation": "quick_gelu"})
    model = randomize(NanoMolmo2(config)).eval()
    model.save_pretrained(tmp_path)
    again = NanoMolmo2.from_pretrained(tmp_path).eval()
    assert again.config.connector.kind == kind and again.config.vision.use_cls_token
    inputs = image_inputs(tiny_molmo2_config())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)


def test_from_molmo2_and_qwen3_folders(tmp_path):
    """The default composition: Molmo2's ViT + pooling, Qwen3's LLM, a fresh projector."""
    torch.manual_seed(0)
    molmo2 = randomize(Molmo2ForConditionalGeneration(tiny_molmo2_config()))
    molmo2.save_pretrained(tmp_path / "molmo2")
    qwen3 = randomize(
        Qwen3ForCausalLM(
            Qwen3Config(
                vocab_size=151936,
                hidden_size=40,
                intermediate_size=72,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=20,
                tie_word_embeddings=True,
            )
        )
    )
    qwen3.tie_weights()
    qwen3.save_pretrained(tmp_path / "qwen3")
    model = NanoMolmo2.from_molmo2_and_qwen3(tmp_path / "molmo2", tmp_path / "qwen3").eval()
    assert model.config.llm.hidden_size == 40 and model.config.connector.projector_hidden_size == 72
    assert torch.equal(model.vision.pos_embed, molmo2.model.vision_tower.positional_embedding)
    assert torch.equal(
        model.connector.pool.q_proj.weight, molmo2.model.multi_modal_projector.image_pooling_2d.q_proj.weight
    )
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert (model.llm(ids).logits - qwen3(ids).logits).abs().max() <= 1e-4


def test_frozen_encoder_gets_no_gradients_and_the_rest_does():
    model = NanoMolmo2(tiny_config())
    model.vision.freeze()
    model.train()
    inputs = image_inputs(tiny_molmo2_config())
    with pytest.raises(IndexError, match="out of bounds"):  # the collator names the example (tests/data)
        model(**inputs, labels=inputs["input_ids"])
    labels = torch.where(inputs["mm_token_type_ids"] == 1, -100, inputs["input_ids"])
    model(**inputs, labels=labels).loss.backward()
    assert all(p.grad is None for p in model.vision.parameters())
    assert all(p.grad is not None for p in model.connector.parameters())
    assert model.llm.layers[0].attn.qkv_proj.weight.grad is not None


@pytest.mark.slow
def test_tiny_model_overfits_ten_samples():
    """Memorise 10 (image -> answer) pairs. Prompts are identical, so only
    the image tells the answers apart: this also proves the vision path learns."""
    torch.manual_seed(0)
    config = tiny_config()
    model = NanoMolmo2(config)
    model.vision.freeze()
    reference_config = tiny_molmo2_config()
    examples = [image_inputs(reference_config, text_len=12, seed=i) for i in range(10)]
    g = torch.Generator().manual_seed(123)
    for e in examples:  # the same prompt everywhere, a different 6-token answer per image
        e["input_ids"][0, -12:-6] = torch.arange(500, 506)
        e["input_ids"][0, -6:] = torch.randint(1000, 1100, (6,), generator=g)
    batch = batch_inputs(examples)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -6:] = batch["input_ids"][:, -6:]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(300):
        loss = model(**batch, labels=labels).loss
        if loss.item() < 0.05:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_restricted_output_vocabulary(tmp_path):
    """A head over a few token ids: softmax over those only, generation emits only those, saved and reloaded."""
    config = tiny_config()
    allowed = (7, 42, 100, 151645, 3000)
    config.llm.output_token_ids = allowed
    torch.manual_seed(0)
    model = randomize(NanoMolmo2(config)).eval()
    inputs = image_inputs(tiny_molmo2_config())
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, -3:] = torch.tensor([42, 7, 151645])
    with torch.no_grad():
        full = model(**inputs).logits[0]
        out = model(**inputs, labels=labels)
    assert torch.isinf(full[:, 8]).all() and torch.isfinite(full[:, list(allowed)]).all()
    expected = torch.nn.functional.cross_entropy(full[-4:-1, list(allowed)], torch.tensor([1, 0, 3]))
    assert torch.allclose(out.loss, expected, atol=1e-5)
    generated = model.generate(**inputs, max_new_tokens=8, eos_token_id=-1)
    assert set(generated.flatten().tolist()) <= set(allowed)
    with pytest.raises(ValueError, match="not in the model's output vocabulary"):
        model(**inputs, labels=torch.where(labels == 42, 43, labels))
    model.save_pretrained(tmp_path)
    again = NanoMolmo2.from_pretrained(tmp_path).eval()
    assert again.config.llm.output_token_ids == allowed
    assert torch.equal(again.generate(**inputs, max_new_tokens=8, eos_token_id=-1), generated)
