"""What training batches carry for GPUs: uint8 pixels (normalised by the model to the processor's exact floats),
labels checked and loss positions listed on the host, OpenCV single-threaded in workers, and a background
packing thread whose errors reach the training loop."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nanomolmo2.data import loader
from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.image_preprocessing import preprocess_image, preprocess_video
from nanomolmo2.data.loader import DataStream, single_threaded_worker
from nanomolmo2.data.mixture import Mixture
from nanomolmo2.data.packing import collate
from nanomolmo2.data.processor import Processor
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config
from nanomolmo2.models.loss import causal_lm_loss
from nanomolmo2.models.vision_encoder import normalize_pixels
from nanomolmo2.tokens import IGNORE_INDEX, IMAGE_PATCH_ID


def photo(seed: int, shape=(90, 130, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_uint8_pixels_normalise_to_the_float_pixels_bit_for_bit():
    image = preprocess_image(photo(0), crop_size=56, max_crops=4, overlap_margins=(1, 1))
    raw = preprocess_image(photo(0), crop_size=56, max_crops=4, overlap_margins=(1, 1), normalize=False)
    assert raw.pixel_values.dtype == torch.uint8 and image.pixel_values.dtype == torch.float32
    assert torch.equal(normalize_pixels(raw.pixel_values), image.pixel_values)
    assert torch.equal(raw.token_pooling, image.token_pooling) and raw.grid == image.grid
    frames = photo(1, (5, 40, 60, 3))
    video = preprocess_video(frames, [0.0, 0.5, 1.0, 1.5, 2.0], crop_size=56)
    raw_video = preprocess_video(frames, [0.0, 0.5, 1.0, 1.5, 2.0], crop_size=56, normalize=False)
    assert raw_video.pixel_values.dtype == torch.uint8
    assert torch.equal(normalize_pixels(raw_video.pixel_values), video.pixel_values)
    # x/255*2-1 exactly as transformers computes it: 0 -> -1, 255 -> 1, 127.5 would be 0
    assert normalize_pixels(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_the_model_gives_the_same_outputs_from_uint8_and_float_pixels():
    torch.manual_seed(0)
    config = NanoMolmo2Config.tiny()
    config.vision.max_crops, config.vision.overlap_margins = 2, (1, 1)
    model = NanoMolmo2(config).eval()
    prompt = "<|image|>Describe it."
    floats = Processor.for_model(config)(prompt, [photo(2)])
    raw = Processor.for_model(config, uint8_pixels=True)(prompt, [photo(2)])
    assert raw["pixel_values"].dtype == torch.uint8 and torch.equal(raw["input_ids"], floats["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**raw).logits, model(**floats).logits)


def example(answer_ids: list[int], source: str = "rows.jsonl:3"):
    processor = Processor(crop_size=56, max_crops=0, uint8_pixels=True)
    tokenized = tokenize_example(Example([Conversation([("Q?", "A.")])], [photo(3)], source=source), processor)
    n = len(answer_ids)
    tokenized.labels[-n:] = torch.tensor(answer_ids)
    return tokenized


def test_collate_refuses_special_token_labels_naming_the_example():
    good = example([100, 200])
    collate([[good]])
    with pytest.raises(ValueError, match="rows.jsonl:7: label 151938 is a special"):
        collate([[good], [example([100, IMAGE_PATCH_ID], source="rows.jsonl:7")]])


def test_collate_lists_the_loss_positions_of_every_row():
    rows = [[example([5, 6]), example([7, 8, 9])], [example([10])]]
    batch = collate(rows, seq_len=sum(len(e) for e in rows[0]) + 3)
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(batch["loss_positions"], keep.nonzero())
    assert batch["loss_positions"].shape == (int(keep.sum()), 2) and batch["pixel_values"].dtype == torch.uint8


class DeviceQuestions(TorchDispatchMode):
    """Counts the ops that would make the host wait for a GPU: reading a value, or a data-dependent shape."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in ("_local_scalar_dense", "nonzero", "masked_select", "item"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_loss_asks_the_device_nothing_when_the_positions_come_from_the_host():
    torch.manual_seed(0)
    hidden, head = torch.randn(2, 9, 8, requires_grad=True), torch.randn(50, 8)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = IGNORE_INDEX
    positions = (labels[:, 1:] != IGNORE_INDEX).nonzero()
    with DeviceQuestions() as counted:
        loss, _ = causal_lm_loss(hidden, labels, head, z_loss_weight=1e-4, normalizer=13.0, loss_positions=positions)
        loss.backward()
    assert counted.count == 0
    with DeviceQuestions() as counted:
        counting, _ = causal_lm_loss(hidden, labels, head, z_loss_weight=1e-4, normalizer=13.0)
    assert counted.count > 0 and torch.equal(loss, counting)  # without them it must count: same loss


def test_workers_run_opencv_on_one_thread():
    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            import cv2

            return cv2.getNumThreads()

    workers = torch.utils.data.DataLoader(Threads(), num_workers=1, worker_init_fn=single_threaded_worker)
    assert [int(n) for n in workers] == [1, 1]


def test_an_error_in_the_packing_thread_reaches_the_consumer_and_the_thread_stops(monkeypatch):
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, row):
            raise RuntimeError("a bug, not a bad row")

    stream = DataStream(Mixture([(1.0, [Broken()])], seed=0), Processor(crop_size=56, max_crops=0), 1, 64)
    with pytest.raises(RuntimeError, match="a bug, not a bad row"):
        next(iter(stream))
    assert stream._threads == [] and stream in loader._LIVE_STREAMS
