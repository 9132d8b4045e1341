"""`nanomolmo2 chat`: a conversation in the terminal about images or a video, the answer streamed as it is generated.

    nanomolmo2 chat --checkpoint runs/demo/stage3/final --image a.png [--image b.png] [--video clip.mp4]

Type a question and press Enter. Commands: `/image PATH` adds an image (it joins the media at the front, as
training lays them out), `/reset` forgets the questions and answers (the media stay), `/quit` (or Ctrl-D) ends.
When an answer holds points they are drawn on the image (or the frames) into a PNG, and its path is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..data.image_preprocessing import load_image
from ..data.video_io import load_video
from .conversation import Conversation, Sampling
from .draw import answer_picture
from .loading import add_model_arguments, open_model

HELP = "commands: /image PATH (add an image), /reset (forget the conversation), /quit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--image", action="append", default=[], help="an image to talk about (repeat for several)")
    parser.add_argument("--video", help="a video to talk about")
    parser.add_argument("--max-frames", type=int, default=16, help="frames sampled from the video")
    parser.add_argument("--out-dir", default="runs/chat", help="where the pictures of points go")


def say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> None:
    model, processor = open_model(args.checkpoint, args.dtype, args.device)
    images = [load_image(path).convert("RGB") for path in args.image]
    video = load_video(args.video, max_frames=args.max_frames) if args.video else None
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    chat = Conversation(model, processor, images, video, sampling)
    out = Path(args.out_dir)
    media = f"{len(images)} image(s)" + (f" and a video of {len(video[1])} frames" if video else "")
    say(f"nanomolmo2 chat: {args.checkpoint}, {media}. {HELP}\n")
    turn = 0
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            say("\n")
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            say(f"[conversation reset: {chat.reset()} turn(s) forgotten]\n")
            continue
        if line.startswith("/image"):
            path = line.removeprefix("/image").strip()
            try:
                chat.add_image(load_image(path).convert("RGB"))
            except (OSError, ValueError) as error:
                say(f"[cannot add {path!r}: {error}]\n")
                continue
            say(f"[added image {len(chat.images)}: {path}]\n")
            continue
        if line.startswith("/"):
            say(f"[unknown command {line.split()[0]}; {HELP}]\n")
            continue
        start = time.perf_counter()
        answer = chat.ask(line, on_text=say)
        seconds = time.perf_counter() - start
        say(f"\n[{chat.last_prompt_tokens} prompt tokens, {seconds:.1f} s]\n")
        turn += 1
        picture = answer_picture(answer, chat.images, chat.video)
        if picture is not None:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"points-{turn}.png"
            picture.save(path)
            say(f"[points drawn in {path}]\n")
