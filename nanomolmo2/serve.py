"""`nanomolmo2 serve`: a web demo. Upload an image or a video, ask, watch the answer stream in, and see the points
of the answer drawn (on the image, or on each video frame at the time it names).

    nanomolmo2 serve --checkpoint runs/demo/stage3/final [--host 127.0.0.1] [--port 7860]

The page is Gradio's, an optional extra (`pip install -e .[demo]`), imported only when the command runs. Two
examples are preloaded: a ShapesWorld image and video, made on the fly (the held-out seed), with a pointing
question each, so the page works with the model `make demo` trains. One question at a time is answered; each
is a fresh one-turn conversation about the media on the page.
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import PIL.Image

from .data.points import POINT_PROMPT, VIDEO_POINT_PROMPT
from .data.processor import Processor
from .data.video_io import load_video
from .eval.conversation import Conversation, Sampling
from .eval.draw import answer_picture
from .eval.loading import add_model_arguments, open_model
from .models.nanomolmo2 import NanoMolmo2
from .shapesworld.images import make_row
from .shapesworld.videos import make_video, video_row

EXAMPLE_SEED = 1  # the demo's held-out split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines too")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-frames", type=int, default=16, help="frames sampled from a video")


def example_media(folder: Path, size: int = 112) -> list[tuple[Path | None, Path | None, str]]:
    """A ShapesWorld image and video written into `folder`, each with a pointing question about one of its objects:
    `(image, video, question)` rows for the page's examples."""
    folder.mkdir(parents=True, exist_ok=True)
    row, scene = make_row(EXAMPLE_SEED, 0, "easy", size)
    image = folder / "shapesworld.png"
    scene.image.save(image)
    label = next(a["label"] for a in row["annotations"] if a["task"] == "pointing" and a["points"])
    clip = make_video(EXAMPLE_SEED, 0, "easy", size, seconds=(2, 4))
    video = folder / "shapesworld.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (size, size))
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    rows = video_row(EXAMPLE_SEED, 0, "easy", clip)["annotations"]
    video_label = next(a["label"] for a in rows if a["task"] == "pointing" and a["points"])
    image_row = (image, None, POINT_PROMPT.format(label=label))
    return [image_row, (None, video, VIDEO_POINT_PROMPT.format(label=video_label))]


def answer_stream(
    model: NanoMolmo2,
    processor: Processor,
    sampling: Sampling,
    image: PIL.Image.Image | None,
    video_path: str | None,
    question: str,
    max_frames: int = 16,
) -> Iterator[tuple[str, PIL.Image.Image | None]]:
    """(answer so far, None) as the tokens come, then (answer, its points drawn or None). Generation runs in a
    thread that hands each piece of text over a queue, so the page gets it while the next tokens are computed."""
    if not question or not question.strip():
        raise ValueError("ask a question")
    images = [image.convert("RGB")] if image is not None else []
    video = load_video(video_path, max_frames=max_frames) if video_path else None
    chat = Conversation(model, processor, images, video, sampling)
    pieces: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            pieces.put(("answer", chat.ask(question.strip(), on_text=lambda piece: pieces.put(("text", piece)))))
        except Exception as error:  # handed to the page, which shows it
            pieces.put(("error", error))

    threading.Thread(target=work, daemon=True).start()
    text = ""
    while True:
        kind, value = pieces.get()
        if kind == "error":
            raise value
        if kind == "answer":
            yield value, answer_picture(value, images, video)
            return
        text += value
        yield text, None


def build_page(model: NanoMolmo2, processor: Processor, sampling: Sampling, examples: list, max_frames: int = 16):
    """The Gradio page (Blocks); element ids image, video, question, ask, answer, points are stable for tests."""
    import gradio as gr

    def respond(image, video, question):
        try:
            yield from answer_stream(model, processor, sampling, image, video, question, max_frames)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    with gr.Blocks(title="nanoMolmo2", analytics_enabled=False) as page:
        gr.Markdown("## nanoMolmo2\nAsk about an image or a video. Points in the answer are drawn on the right.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", elem_id="image", sources=["upload", "clipboard"])
                video = gr.Video(label="Video", elem_id="video", sources=["upload"])
                question = gr.Textbox(label="Question", elem_id="question", lines=2)
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="Answer", elem_id="answer", lines=6, interactive=False)
                points = gr.Image(label="Points", elem_id="points", type="pil", format="png", interactive=False)
        examples = [[None if v is None else str(v) for v in row] for row in examples]
        gr.Examples(examples, inputs=[image, video, question], label="ShapesWorld examples")
        for event in (ask.click, question.submit):
            event(respond, [image, video, question], [answer, points])
    return page


def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        import gradio as gr
    except ImportError:
        raise SystemExit("nanomolmo2 serve needs Gradio: pip install -e '.[demo]'") from None
    model, processor = open_model(args.checkpoint, args.dtype, args.device)
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    examples = example_media(Path(tempfile.mkdtemp(prefix="nanomolmo2-serve-")))
    page = build_page(model, processor, sampling, examples, args.max_frames)
    # System fonts: the default theme would fetch its web fonts from the internet.
    fonts = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}
    theme = gr.themes.Default(**fonts)
    print(f"nanomolmo2 serve: {args.checkpoint} on http://{args.host}:{args.port}", flush=True)
    page.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, theme=theme, ssr_mode=False, show_error=True
    )
