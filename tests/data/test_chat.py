"""One chat layout: the prompt generation feeds the model is exactly the start of the training sequence."""

import numpy as np
import pytest
import torch

from nanomolmo2.data.chat import prompt
from nanomolmo2.data.examples import Conversation, Example, tokenize_example
from nanomolmo2.data.processor import Processor
from nanomolmo2.eval.generation import Request, generate_answers
from nanomolmo2.models import NanoMolmo2, NanoMolmo2Config

from .media import real_photos


@pytest.fixture(scope="module")
def processor():
    return Processor(crop_size=56, max_crops=2, overlap_margins=(1, 1))


class StillVideo:
    """A three-frame clip held in memory, loaded like VideoClip."""

    def load(self):
        frames = np.stack([np.full((40, 60, 3), 40 * k, np.uint8) for k in range(3)])
        return frames, [0.0, 0.5, 1.0]


@pytest.mark.parametrize("media", ["none", "one image", "two images", "video", "image and video"])
def test_prompt_is_the_prefix_of_the_training_sequence(processor, media):
    photos = real_photos()
    images = {"one image": [photos["chelsea"]], "two images": [photos["china"], photos["rocket"]]}.get(media, [])
    if media == "image and video":
        images = [photos["coffee"]]
    video = StillVideo() if "video" in media else None
    question, answer = "What is shown?\nAnswer briefly.", "A cat."
    example = tokenize_example(Example([Conversation([(question, answer)])], images, video), processor)

    vision = [processor.preprocess(image) for image in images]
    if video is not None:
        vision.append(processor.preprocess_video(*video.load()))
    ids = prompt(processor, vision, question)
    tokenizer = processor.tokenizer
    assert example.input_ids[: len(ids)].tolist() == ids
    assert example.input_ids[len(ids) :].tolist() == tokenizer.encode(answer) + [tokenizer.eos_id]
    assert (example.labels[: len(ids)] == -100).all()  # nothing of the prompt is learnt
    if len(images) > 1:
        assert "Image 1" in tokenizer.decode(ids) and "Image 2" in tokenizer.decode(ids)


def test_generation_feeds_the_model_the_training_prompt(processor, monkeypatch):
    """generate_answers hands model.generate exactly chat.prompt's ids (one request, no padding)."""
    config = NanoMolmo2Config.tiny()
    config.vision.image_size, config.vision.max_crops, config.vision.overlap_margins = 56, 2, (1, 1)
    model = NanoMolmo2(config).eval()
    photo = real_photos()["chelsea"]
    seen = {}

    def fake_generate(input_ids, **kwargs):
        seen["ids"] = input_ids[0].tolist()
        return torch.full((1, 1), processor.tokenizer.eos_id)

    monkeypatch.setattr(model, "generate", fake_generate)
    generate_answers(model, processor, [Request("Point to the cat", [photo])])
    assert seen["ids"] == prompt(processor, [processor.preprocess(photo)], "Point to the cat")
