"""`nanomolmo2 chat` driven through a pseudo-terminal, as a person types: the streamed answer, `/image`, `/reset`,
the picture of the points; and the checkpoint lookup (a folder, or a Hub id from the Hugging Face cache)."""

import os
import re
import sys
from pathlib import Path

import numpy as np
import pexpect
import PIL.Image
import pytest

from nanomolmo2.data.chat import prompt
from nanomolmo2.data.processor import Processor
from nanomolmo2.eval.conversation import Conversation, Sampling
from nanomolmo2.eval.generation import Request, generate_answers
from nanomolmo2.eval.loading import CheckpointError, open_model, resolve_checkpoint

from .checkpoints import POINTS_ANSWER, cross_at, random_checkpoint, scripted_checkpoint

ROOT = Path(__file__).resolve().parents[2]
STATS = r"\r\n\[(\d+) prompt tokens, [\d.]+ s\]\r\n"


def grey_image(path: Path, size=(96, 64), value=90) -> Path:
    PIL.Image.new("RGB", size, (value, value, value)).save(path)
    return path


def spawn_chat(tmp_path: Path, *args: str, env: dict | None = None) -> pexpect.spawn:
    command = ["-m", "nanomolmo2.cli", "chat", "--out-dir", str(tmp_path / "pictures"), *args]
    child = pexpect.spawn(
        sys.executable, command, cwd=str(ROOT), env=env, encoding="utf-8", timeout=120, dimensions=(40, 200)
    )
    child.expect_exact("> ")  # a hang guard only: pexpect fails after `timeout` seconds without the prompt
    return child


def ask(child: pexpect.spawn, question: str) -> tuple[str, int]:
    """Type a question; the streamed answer as the terminal shows it and the prompt length the chat reports."""
    child.sendline(question)
    child.expect_exact(question + "\r\n")  # the terminal's echo of the typed line
    child.expect(STATS)
    return child.before, int(child.match.group(1))


def test_scripted_chat_streams_adds_images_resets_and_draws_points(tmp_path):
    checkpoint = scripted_checkpoint(tmp_path / "scripted")
    first, second = grey_image(tmp_path / "a.png"), grey_image(tmp_path / "b.png", (64, 64), 160)
    processor = Processor.for_model(open_model(checkpoint)[0].config)
    question = "Point to the dot."
    child = spawn_chat(tmp_path, "--checkpoint", str(checkpoint), "--image", str(first), "--max-new-tokens", "40")

    answer, tokens = ask(child, question)
    assert answer == POINTS_ANSWER  # tab and carriage return reach the terminal as they were generated
    assert tokens == len(prompt(processor, [processor.preprocess(PIL.Image.open(first))], question))
    child.expect(r"\[points drawn in (\S+\.png)\]")
    picture = np.asarray(PIL.Image.open(child.match.group(1)))
    scale = 448 // 96  # the picture is the image enlarged, with a cross at (473, 650) per mille
    assert picture.shape == (64 * scale, 96 * scale, 3)
    assert cross_at(picture, 0.473 * 96 * scale, 0.650 * 64 * scale)
    assert (picture[2, 2] == 90).all()

    child.expect_exact("> ")
    child.sendline(f"/image {second}")
    child.expect_exact(f"[added image 2: {second}]")
    child.expect_exact("> ")
    answer, tokens = ask(child, "And now?")
    images = [processor.preprocess(PIL.Image.open(path)) for path in (first, second)]
    assert tokens == len(prompt(processor, images, "And now?", history=[(question, POINTS_ANSWER)]))
    child.expect(r"\[points drawn in (\S+\.png)\]")
    two = np.asarray(PIL.Image.open(child.match.group(1)))
    assert two.shape[1] > picture.shape[1]  # both images, side by side: the point is on image 1 only
    tile = two[6 : 6 + 64 * scale, 6 : 6 + 96 * scale]  # grid() leaves a 6-pixel gap around each tile
    assert cross_at(tile, 0.473 * 96 * scale, 0.650 * 64 * scale)
    assert (two == 160).all(axis=-1).sum() > 0.9 * (64 * (448 // 64)) ** 2  # image 2 untouched

    child.expect_exact("> ")
    child.sendline("/reset")
    child.expect_exact("[conversation reset: 2 turn(s) forgotten]")
    child.expect_exact("> ")
    _, tokens = ask(child, question)
    assert tokens == len(prompt(processor, images, question))  # no history left, both images stay
    child.expect_exact("> ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_streamed_text_is_the_answer_and_hub_ids_come_from_the_local_cache(tmp_path):
    """A random model through the terminal: what streams is what batched generation answers. The checkpoint is
    given as a Hub id that resolves from a local cache folder (HF_HUB_CACHE), as `hf download` would leave it."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-molmo2" / "snapshots" / ("ab" * 20)
    random_checkpoint(snapshot)
    (cache / "models--someone--tiny-molmo2" / "refs").mkdir()
    (cache / "models--someone--tiny-molmo2" / "refs" / "main").write_text("ab" * 20)
    image = grey_image(tmp_path / "a.png")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    child = spawn_chat(
        tmp_path, "--checkpoint", "someone/tiny-molmo2", "--image", str(image), "--max-new-tokens", "12", env=env
    )
    streamed, _ = ask(child, "What is this?")
    child.expect_exact("> ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)

    model, processor = open_model(snapshot)
    expected = generate_answers(model, processor, [Request("What is this?", [image], max_new_tokens=12)])[0]
    assert streamed.strip() == expected and expected


def test_streaming_hands_over_the_answer_piece_by_piece(tmp_path):
    model, processor = open_model(scripted_checkpoint(tmp_path / "scripted"))
    pieces = []
    chat = Conversation(model, processor, [PIL.Image.new("RGB", (40, 40))], sampling=Sampling(max_new_tokens=40))
    answer = chat.ask("Point.", on_text=pieces.append)
    assert answer == POINTS_ANSWER and "".join(pieces) == POINTS_ANSWER
    assert len(pieces) == len(processor.tokenizer.encode_text(POINTS_ANSWER))  # one piece per token
    assert chat.history == [("Point.", POINTS_ANSWER)]


def test_hub_ids_resolve_from_the_local_cache_when_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    snapshot = tmp_path / "models--org--model" / "snapshots" / ("cd" * 20)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--model" / "refs").mkdir()
    (tmp_path / "models--org--model" / "refs" / "main").write_text("cd" * 20)
    assert resolve_checkpoint("org/model") == snapshot
    assert resolve_checkpoint(tmp_path) == tmp_path  # a folder is a folder
    absent = "no folder org/absent and no cached Hub model org/absent: HF_HUB_OFFLINE is set and the cache"
    with pytest.raises(CheckpointError, match=re.escape(absent)):
        resolve_checkpoint("org/absent")
    with pytest.raises(CheckpointError, match="not a Hub id"):
        resolve_checkpoint(tmp_path / "missing" / "deeper")
    assert "\n" not in str(CheckpointError("x"))
