"""Property tests (hypothesis) for nanomolmo2/data/collator.py: for random example lengths, vision spans, row counts
and sequence lengths, the packer loses and duplicates nothing, puts every example whole into one row (never a
vision span cut), and the segment ids, position ids, attention mask, labels, loss weights and vision inputs of
every batch are exactly those of the examples it holds."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomolmo2.data.examples import TokenizedExample
from nanomolmo2.data.image_preprocessing import ImageInputs
from nanomolmo2.data.packing import Packer, collate, first_fit_decreasing
from nanomolmo2.tokens import IGNORE_INDEX, IMAGE_END_ID, IMAGE_PATCH_ID, LOW_RES_IMAGE_START_ID, PAD_ID

SETTINGS = settings(max_examples=80, deadline=None)
PATCHES, CHANNELS = 4, 3  # each example's one fake crop; its pixels all hold the example's number
KEYS = ("input_ids", "labels", "loss_weights", "position_ids", "annotation_ids", "mm_token_type_ids")


def make_example(number: int, vision: int, text: int, labelled: list[bool]) -> TokenizedExample:
    """BOS, `vision` <im_patch> tokens between image start/end (if any), then `text` tokens all equal to
    1000 + number (so every example can be recognised), some of them labelled."""
    prefix = [151645] + ([LOW_RES_IMAGE_START_ID] + [IMAGE_PATCH_ID] * vision + [IMAGE_END_ID] if vision else [])
    ids = torch.tensor(prefix + [1000 + number] * text)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.tensor([False] * len(prefix) + [labelled[k % len(labelled)] for k in range(text)])
    labels[mask] = ids[mask]
    images = []
    if vision:
        pooling = torch.tensor([[k % PATCHES, -1] for k in range(vision)])
        images = [ImageInputs(torch.full((1, PATCHES, CHANNELS), float(number)), pooling, (1, vision, 0, 0))]
    return TokenizedExample(
        input_ids=ids,
        labels=labels,
        loss_weights=mask.float() * 0.5,
        position_ids=torch.arange(len(ids)),
        annotation_ids=torch.tensor([0] * len(prefix) + [1] * text),
        mm_token_type_ids=torch.tensor([0] + [1] * (len(prefix) - 1) + [0] * text),
        vision=images,
        source=f"example {number}",
    )


@st.composite
def streams(draw, min_examples=0, max_examples=30):
    sizes = st.tuples(st.integers(0, 24), st.integers(1, 90))  # (<im_patch> tokens, text tokens)
    sizes = draw(st.lists(sizes, min_size=min_examples, max_size=max_examples))
    labelled = draw(st.lists(st.booleans(), min_size=1, max_size=5))
    return [make_example(i, vision, text, labelled) for i, (vision, text) in enumerate(sizes)]


def row_contents(batch: dict, examples: list[TokenizedExample]) -> list[list[int]]:
    """The example numbers in each row of a batch, checking on the way that a row is whole examples in stream
    order, each exactly as it was, then padding."""
    rows = []
    for r in range(batch["input_ids"].shape[0]):
        seg = batch["segment_ids"][r]
        real = int((seg >= 0).sum())
        assert bool((seg[real:] == -1).all()) and torch.equal(batch["attention_mask"][r], (seg >= 0).long())
        assert bool((batch["input_ids"][r, real:] == PAD_ID).all())
        assert bool((batch["labels"][r, real:] == IGNORE_INDEX).all()) and not batch["loss_weights"][r, real:].any()
        assert not batch["mm_token_type_ids"][r, real:].any()
        numbers, start = [], 0
        while start < real:
            s = len(numbers)
            end = start + int((seg == s).sum())
            assert end > start and bool((seg[start:end] == s).all())  # segments 0, 1, ..., one contiguous run each
            number = int(batch["input_ids"][r, end - 1]) - 1000  # the last token is text: 1000 + number
            example = examples[number]
            assert end - start == len(example)
            for key in KEYS:  # the whole example: never cut, so no vision span is cut either
                assert torch.equal(batch[key][r, start:end], getattr(example, key)), key
            numbers.append(number)
            start = end
        assert numbers == sorted(numbers)  # stream order inside a row
        rows.append(numbers)
    return rows


def check_vision(batch: dict, rows: list[list[int]], examples: list[TokenizedExample]) -> None:
    """The i-th <im_patch> of the batch (row-major order, as the model fills them) pools its own example's pixels."""
    owners = [n for row in rows for n in row for _ in range(int((examples[n].input_ids == IMAGE_PATCH_ID).sum()))]
    if not owners:
        assert "pixel_values" not in batch
        return
    assert batch["image_token_pooling"].shape[0] == len(owners)
    pixels = batch["pixel_values"].reshape(-1, CHANNELS)
    assert pixels[batch["image_token_pooling"][:, 0], 0].tolist() == [float(n) for n in owners]
    assert bool((batch["image_token_pooling"][:, 1] == -1).all())


@SETTINGS
@given(streams(), st.integers(1, 3), st.integers(16, 140), st.integers(1, 4))
def test_packer_keeps_every_example_whole_and_once(examples, rows, seq_len, lookahead):
    packer = Packer(rows, seq_len, lookahead=lookahead)
    batches, seen = [], []
    for example in examples:
        batch = packer.add(example)
        if batch is not None:
            assert batch["input_ids"].shape == (rows, seq_len)  # streaming batches are full
            batches.append(batch)
    batches += list(packer.pack([]))  # the end of a finite stream: the rest, maybe in fewer rows
    for batch in batches:
        assert batch["input_ids"].shape[1] == seq_len and 1 <= batch["input_ids"].shape[0] <= rows
        contents = row_contents(batch, examples)
        check_vision(batch, contents, examples)
        assert batch["num_examples"] == sum(len(r) for r in contents)
        real = sum(len(examples[n]) for r in contents for n in r)
        assert batch["packing_efficiency"] == real / (rows * seq_len)
        seen += [n for r in contents for n in r]
    fitting = [i for i, e in enumerate(examples) if len(e) <= seq_len]
    assert sorted(seen) == fitting  # nothing lost, nothing duplicated, the over-long ones left out
    assert packer.stats.skipped_too_long == len(examples) - len(fitting) and not packer.pending
    assert packer.stats.examples == len(fitting)


@SETTINGS
@given(st.lists(st.integers(1, 100), max_size=40), st.integers(100, 160))
def test_first_fit_decreasing_is_a_tight_partition(lengths, capacity):
    bins = first_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert all(load <= capacity for load in loads)
    # first fit: an item opened a new bin only because it fitted in no earlier one, so no two bins could merge
    assert all(a + b > capacity for i, a in enumerate(loads) for b in loads[i + 1 :])


@SETTINGS
@given(streams(min_examples=1, max_examples=10), st.data())
def test_collate_keeps_rows_as_given(examples, data):
    """Any split of a stream into rows collates to exactly those rows (the packer's contract with the model)."""
    cuts = sorted(data.draw(st.sets(st.integers(1, len(examples) - 1), max_size=3))) if len(examples) > 1 else []
    groups = [examples[a:b] for a, b in zip([0, *cuts], [*cuts, len(examples)], strict=True)]
    width = max(sum(len(e) for e in g) for g in groups) + data.draw(st.integers(0, 5))
    batch = collate(groups, seq_len=width)
    assert batch["input_ids"].shape == (len(groups), width)
    contents = row_contents(batch, examples)
    assert contents == [[int(e.source.split()[-1]) for e in g] for g in groups]
    check_vision(batch, contents, examples)


def test_packer_waits_for_its_look_ahead_then_takes_the_fullest_rows():
    """rows 2 x 100 tokens, look-ahead 3 batches: nothing comes out before 600 tokens are buffered; then the two
    fullest first-fit-decreasing bins (worked out by hand) form the batch and the rest stay buffered."""
    packer = Packer(rows=2, seq_len=100, lookahead=3)
    lengths = [70, 70, 60, 50, 40, 40, 30, 30, 30] + [20] * 6 + [10] * 6  # 600 tokens
    examples = [make_example(i, 0, n - 1, [True]) for i, n in enumerate(lengths)]
    for example in examples[:-1]:
        assert packer.add(example) is None  # 590 tokens: still waiting
    batch = packer.add(examples[-1])
    assert batch is not None and batch["input_ids"].shape == (2, 100)
    # First-fit decreasing: [70, 30] [70, 30] [60, 40] [50, 40, 10] [30, 20, 20, 20, 10] [20, 20, 20, 10 x 4]:
    # six full bins; two form the batch, four (400 tokens) stay buffered.
    assert batch["attention_mask"].sum(1).tolist() == [100, 100]
    assert sum(len(e) for e in packer.pending) == 400
