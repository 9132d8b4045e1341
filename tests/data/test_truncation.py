"""Over-long examples are truncated as Molmo2 truncates them: conversations dropped from the end, then tokens.

The expected results are worked out from Molmo2's rule (`tokenize_message_list` in
olmo/preprocessing/text_preprocessor.py: a conversation after the first is dropped, with all later ones, when its
first answer token would sit at or beyond seq_len; `MMCollator` in olmo/preprocessing/multimodal_collator.py: then
cut to seq_len) on the lengths of the untruncated example, whose layout test_examples.py checks against Qwen3's chat
template.
"""

import math

import pytest

from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.processor import Processor
from nanomolmo2.tokens import IGNORE_INDEX

from .media import real_photos

TURNS = [("What is 2 + 2?", "It is four, of course."), ("Name a colour.", "Red."), ("Say hi.", "Hi there, friend!")]


@pytest.fixture(scope="module")
def processor():
    return Processor(crop_size=112, max_crops=2, overlap_margins=(2, 2))


def example():
    return Example([Conversation([turn], "vqa") for turn in TURNS])


def layout(processor):
    """(prefix length, [(conversation length, index of its first answer token, its loss tokens)]) untruncated."""
    full = tokenize_example(example(), processor)
    prefix = int((full.annotation_ids == 0).sum())
    parts = []
    for k in (1, 2, 3):
        labels = full.labels[full.annotation_ids == k].tolist()
        first = next(j for j, label in enumerate(labels) if label != IGNORE_INDEX)
        parts.append((len(labels), first, sum(label != IGNORE_INDEX for label in labels)))
    return prefix, parts


def test_a_conversation_answering_at_seq_len_is_dropped_with_the_later_ones(processor):
    prefix, ((n1, _, loss1), (_, f2, _), _) = layout(processor)
    max_len = prefix + n1 + f2  # conversation 2's first answer token would sit exactly at seq_len: dropped
    cut = tokenize_example(example(), processor, weighting="molmo2", max_len=max_len)
    assert len(cut) == prefix + n1 and cut.annotation_ids.max() == 1
    # one conversation kept: 2/sqrt(n) over all its loss tokens, the final end token included, no sqrt(K)
    assert cut.loss_weights[cut.labels != IGNORE_INDEX].tolist() == pytest.approx([2 / math.sqrt(loss1)] * loss1)


def test_a_kept_conversation_is_cut_at_seq_len_and_the_weights_count_the_kept_ones(processor):
    prefix, ((n1, _, loss1), (n2, f2, loss2), (_, f3, _)) = layout(processor)
    max_len = prefix + n1 + f2 + 1  # conversation 2 starts answering inside; conversation 3 cannot
    assert prefix + n1 + n2 + f3 >= max_len
    cut = tokenize_example(example(), processor, weighting="molmo2", max_len=max_len)
    assert len(cut) == max_len and cut.annotation_ids.max() == 2
    weights = cut.loss_weights[cut.labels != IGNORE_INDEX].tolist()
    # K = 2 kept: each conversation's n leaves out its last end token, and every weight is divided by sqrt(2)
    expected = [2 / math.sqrt(loss1 - 1) / math.sqrt(2)] * loss1 + [2 / math.sqrt(loss2 - 1) / math.sqrt(2)]
    assert weights == pytest.approx(expected)


def test_the_first_conversation_is_always_kept_and_cut_mid_answer(processor):
    prefix, ((_, f1, _), _, _) = layout(processor)
    cut = tokenize_example(example(), processor, max_len=prefix + f1 + 3)
    assert len(cut) == prefix + f1 + 3 and int((cut.labels != IGNORE_INDEX).sum()) == 3
    with pytest.raises(ValueError, match="would cut every answer token"):
        tokenize_example(example(), processor, max_len=prefix + f1)


def test_media_that_fill_seq_len_are_refused(processor):
    photo = Example([Conversation([TURNS[0]], "vqa")], [real_photos()["chelsea"]], source="photos.jsonl:3")
    prefix = int((tokenize_example(photo, processor).annotation_ids == 0).sum())
    with pytest.raises(ValueError, match=r"photos.jsonl:3: its media take"):
        tokenize_example(photo, processor, max_len=prefix)
    assert len(tokenize_example(photo, processor, max_len=prefix + 20)) == prefix + 20
