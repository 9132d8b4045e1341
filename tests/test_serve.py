"""`nanomolmo2 serve` end to end in a real headless browser (Debian's Chromium, driven by Playwright): the page
loads, an image is uploaded, a question is sent, the answer streams in and the drawn points appear. The page's
screenshot is kept in runs/test-artifacts/. Also the examples and the video path, without a browser."""

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from nanomolmo2.data.video_io import load_video
from nanomolmo2.eval.conversation import Sampling
from nanomolmo2.eval.loading import open_model
from nanomolmo2.serve import answer_stream, example_media

from .eval.checkpoints import VIDEO_POINTS_ANSWER, cross_at, scripted_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's; `make test` installs it (apt-get install chromium) when it is missing
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "runs" / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """Read the server's output until a line holds `marker`; `timeout` only guards against a hang."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        line = process.stdout.readline() if ready else ""
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} from the server:\n{''.join(seen)}")


@pytest.fixture
def server(tmp_path):
    checkpoint = scripted_checkpoint(tmp_path / "scripted")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "nanomolmo2.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        wait_for_line(process, "Running on local URL", timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_page_answers_an_uploaded_image_and_draws_the_points(server, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    image = tmp_path / "grey.png"
    PIL.Image.new("RGB", (96, 64), (90, 90, 90)).save(image)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server)
            expect(page.locator("#ask")).to_be_visible(timeout=60_000)
            page.locator("#image input[type=file]").set_input_files(str(image))
            page.locator("#question textarea").fill("Point to the dot.")
            page.locator("#ask").click()
            # Playwright polls these conditions; the timeouts only guard against a hang.
            answer = page.locator("#answer textarea")
            expect(answer).to_have_value(re.compile(r'^<points coords="1 2\s+473\s+650">dot$'), timeout=120_000)
            drawn = page.locator("#points img")
            expect(drawn).to_be_visible(timeout=120_000)
            screenshot = tmp_path / "serve.png"
            page.screenshot(path=str(screenshot), full_page=True)
            with urllib.request.urlopen(drawn.get_attribute("src"), timeout=60) as response:  # the server's own file
                picture = np.asarray(PIL.Image.open(BytesIO(response.read())).convert("RGB"))
        finally:
            browser.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "serve.png")
    scale = 448 // 96
    assert picture.shape == (64 * scale, 96 * scale, 3)
    assert cross_at(picture, 0.473 * 96 * scale, 0.650 * 64 * scale)
    shot = np.asarray(PIL.Image.open(screenshot).convert("RGB"))
    assert shot.shape[0] >= 600 and (shot == 90).all(-1).sum() > 1000  # the page, with the grey picture on it


def test_examples_and_video_points_per_frame(tmp_path):
    """The preloaded ShapesWorld examples exist and read back; a video answer streams and its point is drawn on
    the frame at the time it names, and on no other frame."""
    examples = example_media(tmp_path / "examples")
    (image, no_video, image_question), (no_image, video, video_question) = examples
    assert no_video is None and no_image is None
    assert PIL.Image.open(image).size == (112, 112) and image_question.startswith("Point to ")
    assert video_question.startswith("Point to ") and video_question.endswith("in the video.")
    frames, times = load_video(video, max_frames=16)
    assert frames.shape[1:] == (112, 112, 3) and times[:2] == [0.0, 0.5]

    model, processor = open_model(scripted_checkpoint(tmp_path / "video", VIDEO_POINTS_ANSWER))
    steps = list(answer_stream(model, processor, Sampling(max_new_tokens=40), None, str(video), video_question))
    texts = [text for text, _ in steps]
    assert texts[-1] == VIDEO_POINTS_ANSWER and all(picture is None for _, picture in steps[:-1])
    assert len(steps) > 2 and all(VIDEO_POINTS_ANSWER.startswith(t) for t in texts)  # it grew piece by piece
    strip = np.asarray(steps[-1][1])
    columns, crossed = min(8, len(times)), []
    for k in range(len(times)):  # grid(): 6-pixel gaps; frames drawn at 2x (224 px) with a 28-pixel caption below
        x, y = 6 + (k % columns) * (224 + 6), 6 + (k // columns) * (224 + 28 + 6)
        crossed.append(cross_at(strip[y : y + 224, x : x + 224], 0.473 * 224, 0.826 * 224))
    assert crossed[1] and sum(crossed) == 1, crossed  # frames at 0.0, 0.5, 1.0, ...: only the one at 0.5 s

    with pytest.raises(ValueError, match="ask a question"):
        next(answer_stream(model, processor, Sampling(), PIL.Image.open(image), None, "  "))
    answer, picture = list(answer_stream(model, processor, Sampling(max_new_tokens=40), None, None, "Hi"))[-1]
    assert answer == VIDEO_POINTS_ANSWER and picture is None  # no media: nothing to draw on
