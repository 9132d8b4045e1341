"""FlexAttention (models/flex.py) against the SDPA path with the dense mask, on real training batches.

Batches come from the real pipeline (processor, chat layout, packer): packed rows with padding, an image with
several annotations, two images in one example, a video. In fp32 the two paths must give the same hidden states,
loss and gradients (<= 1e-5), with and without activation checkpointing.

PyTorch has no FlexAttention backward on CPU (its wrapper refuses inputs that require grad); uncompiled,
flex_attention runs a dense reference implementation whose backward works, so the gradient tests lift that
refusal. The compiled CPU kernel is checked forward only (slow: compiling takes ~30 s here).
"""

import numpy as np
import pytest
import torch
import torch.nn.attention.flex_attention as torch_flex

from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.packing import collate
from nanomolmo2.data.processor import Processor
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config, flex
from nanomolmo2.models import language_model as language_model_module
from nanomolmo2.models.attention import attention_rule, build_attention_mask

TOL = 1e-5


class Clip:
    """A decoded video, as video datasets hand it to tokenize_example."""

    def __init__(self, frames: int, seed: int) -> None:
        self.frames = np.random.default_rng(seed).integers(0, 256, (frames, 40, 48, 3), dtype=np.uint8)

    def load(self):
        return self.frames, [t / 2 for t in range(len(self.frames))]


@pytest.fixture(scope="module")
def model_and_processor():
    torch.manual_seed(0)
    config = NanoMolmo2Config.tiny()
    config.vision.max_crops, config.vision.overlap_margins = 2, (1, 1)
    model = NanoMolmo2(config)
    model.vision.freeze()
    return model, Processor.for_model(config, uint8_pixels=True)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)


def chat(*pairs: str) -> list[Conversation]:
    return [Conversation([(pairs[i], pairs[i + 1])], "vqa") for i in range(0, len(pairs), 2)]


KINDS = ["packed", "multi-annotation", "multi-image", "video"]


def batch_of(kind: str, processor: Processor, examples: bool = False) -> dict:
    """Rows of examples of one kind, packed (with padding) as training packs them (or the examples)."""
    if kind == "packed":
        rows = [[Example(chat("What is it?", "A red circle."), [image(0)]), Example(chat("Hi", "Hello."))],
                [Example(chat("Colour?", "Blue."), [image(1)])]]  # fmt: skip
    elif kind == "multi-annotation":
        conversations = chat("Colour?", "Red.", "Shape?", "A circle.", "How many?", "Two.")
        rows = [[Example(conversations, [image(2)]), Example(chat("Count.", "3"), [image(3)])]]
    elif kind == "multi-image":
        rows = [[Example(chat("Which is brighter?", "The second one."), [image(4), image(5)])]]
    elif kind == "video":
        video = Example(chat("Where does it go?", "Left.", "What colour?", "Green."), video=Clip(6, seed=6))
        rows = [[video, Example(chat("Name it.", "A square."), [image(7)])]]
    else:  # all of the above in one row, long enough for tiles that the block mask skips
        rows = [[example for kind in KINDS for row in batch_of(kind, processor, examples=True) for example in row]]
    if examples:
        return rows
    tokenized = [[tokenize_example(example, processor) for example in row] for row in rows]
    return collate(tokenized, seq_len=max(sum(len(e) for e in row) for row in tokenized) + 7)


def forward_backward(model: NanoMolmo2, batch: dict, attention: str, checkpointing: bool):
    model.llm.attention, model.llm.gradient_checkpointing = attention, checkpointing
    model.zero_grad(set_to_none=True)
    model.train()
    out = model(**batch, return_logits=False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.hidden_states.detach(), out.loss.detach(), grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("kind", KINDS)
def test_flex_matches_sdpa_outputs_and_gradients(model_and_processor, monkeypatch, kind, checkpointing):
    model, processor = model_and_processor
    batch = batch_of(kind, processor)
    assert batch["pixel_values"].dtype == torch.uint8
    if kind == "multi-annotation":
        assert int(batch["annotation_ids"].max()) == 3
    if kind == "packed":
        assert int(batch["segment_ids"][0].max()) == 1 and not bool(batch["attention_mask"].all())
    hidden, loss, grads = forward_backward(model, batch, "sdpa", checkpointing)
    monkeypatch.setattr(torch_flex, "_validate_device", lambda *tensors: None)  # the dense reference's backward
    calls = []
    monkeypatch.setattr(language_model_module, "flex", lambda *args: calls.append(1) or flex.flex(*args))
    flex_hidden, flex_loss, flex_grads = forward_backward(model, batch, "flex", checkpointing)
    assert len(calls) == model.config.llm.num_layers * (2 if checkpointing else 1)  # recomputed in backward
    assert (flex_hidden - hidden).abs().max() <= TOL and abs(float(flex_loss - loss)) <= TOL
    assert set(flex_grads) == set(grads) and len(grads) > 10
    for name, grad in grads.items():
        assert (flex_grads[name] - grad).abs().max() <= TOL, name
    assert max(float(g.abs().max()) for g in grads.values()) > 1e-3  # gradients worth comparing


def test_block_mask_lists_only_the_tiles_the_rule_allows():
    """Four 128-token examples in a 512-token row: 4 of the 16 tiles (the causal diagonal) hold allowed pairs."""
    segments = torch.arange(4).repeat_interleave(128)[None]
    vision = torch.zeros(1, 512, dtype=torch.bool)
    vision[0, 10:60] = True  # a bidirectional block inside the first example
    rule = attention_rule(segment_ids=segments, vision_mask=vision)
    mask = flex.block_mask(rule, 1, 512, torch.device("cpu"))
    dense = build_attention_mask(512, 512, segment_ids=segments, vision_mask=vision)[0, 0]
    tiles = dense.reshape(4, 128, 4, 128).any(dim=(1, 3))
    listed = int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum())
    assert listed == int(tiles.sum()) == 4
    assert torch.equal(mask.to_dense()[0, 0].bool(), tiles)


def test_generation_with_the_kv_cache_stays_on_sdpa(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    inputs = processor("<|image|>What is it?", [image(8)])
    model.eval()
    model.llm.attention = "sdpa"
    expected = model.generate(**inputs, max_new_tokens=4)
    model.llm.attention = "flex"
    monkeypatch.setattr(language_model_module, "flex", lambda *args: pytest.fail("flex with a KV cache"))
    assert torch.equal(model.generate(**inputs, max_new_tokens=4), expected)


@pytest.mark.slow
def test_compiled_flex_forward_matches_sdpa_on_cpu(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    batch = batch_of("all", processor)
    rule = attention_rule(batch["attention_mask"], batch["segment_ids"], batch["annotation_ids"],
                          batch["mm_token_type_ids"] > 0)  # fmt: skip
    mask = flex.block_mask(rule, 1, batch["input_ids"].shape[1], torch.device("cpu"))
    assert batch["input_ids"].shape[1] > 256 and mask.sparsity() > 0  # some tiles are skipped
    model.eval()
    with torch.no_grad():
        model.llm.attention = "sdpa"
        expected = model(**batch).hidden_states
        monkeypatch.setattr(flex, "COMPILED_ON", ("cuda", "cpu"))
        model.llm.attention = "flex"
        got = model(**batch).hidden_states
    assert (got - expected).abs().max() <= TOL
