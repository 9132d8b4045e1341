"""`make demo`: train a tiny nanoMolmo2 through all three stages on ShapesWorld, on a CPU, and evaluate it.

    python -m nanomolmo2.demo [--quick] [--out runs/demo] [--data data/demo]

1. ShapesWorld at the `easy` level: a training split (seed 0) and a held-out split (seed 1), images and videos.
2. Stage 1 (captions, pointing, text) -> stage 2 (all image and video tasks) -> stage 3 (longer sequences,
   more frames), each starting from the previous stage's final model (nanomolmo2/configs/tiny_stage*.toml).
3. Molmo2's metrics on the held-out split, each with its standard error, and the same metrics with blank images and
   blank video frames; a table, `metrics.json` (with the seconds of each part) and `points.png` (predicted points
   over the true masks).
`--quick` is a two-minute version for the test suite. `--deterministic` gives the same numbers on every run of the
same commit on the same machine (docs/LOG.md: how far apart two runs are with and without it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .data.datasets import CAPTION_PROMPTS
from .data.points import COUNT_PROMPT, POINT_PROMPT, VIDEO_POINT_PROMPT, parse_points
from .data.video_io import load_video
from .eval.commands import load_model, points_picture
from .eval.draw import caption_under, draw_points, grid, overlay_masks, stack, text_block
from .eval.evaluate import Query, evaluate, question_text, score, video_queries
from .eval.generation import Request, generate_answers
from .pretrain.parts import pretrained_folders
from .shapesworld.images import VERSION as IMAGES_VERSION
from .shapesworld.images import write_shapesworld
from .shapesworld.videos import VERSION as VIDEOS_VERSION
from .shapesworld.videos import write_shapesworld_videos
from .training.config import load_config
from .training.trainer import run

TARGETS = {
    "count_accuracy": 0.80,
    "vqa_accuracy": 0.75,
    "point_f1": 0.55,
    "caption_accuracy": 0.40,
    "video_qa_accuracy": 0.65,
    "video_point_f1": 0.35,
}


DETERMINISTIC_THREADS = 2


@dataclass
class Settings:
    images: int
    videos: int
    eval_images: int  # held-out: each image is asked one question of each kind (per_kind), each video too
    eval_videos: int
    steps: tuple[int, int, int]  # per stage
    eval_frames: int = 16
    per_kind: int = 1
    blank_limit: int | None = None  # blank-media variants of the first N held-out queries of each kind


# 640 held-out images and videos: a standard error <= 0.02 for every metric (sqrt(0.25 / 640) = 0.0198 at worst);
# the blank-media variants of half of them (<= 0.028), which saves ~35 s of the 15 minutes (docs/LOG.md).
FULL = Settings(images=6000, videos=600, eval_images=640, eval_videos=640, steps=(280, 100, 4), blank_limit=320)
QUICK = Settings(images=200, videos=20, eval_images=10, eval_videos=4, steps=(30, 25, 2))


def up_to_date(folder: Path, seed: int, images: int, videos: int, text: int) -> bool:
    """Does `folder` hold this split, written by this version of ShapesWorld?"""
    try:
        info = json.loads((folder / "info.json").read_text())
        video_info = json.loads((folder / "videos_info.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {"version": IMAGES_VERSION, "seed": seed, "images": images, "text": text, "image_size": 112}
    wanted_videos = {"version": VIDEOS_VERSION, "seed": seed, "videos": videos, "image_size": 112}
    return all(info.get(k) == v for k, v in wanted.items()) and all(
        video_info.get(k) == v for k, v in wanted_videos.items()
    )


def write_data(folder: Path, settings: Settings) -> tuple[Path, Path]:
    train, held_out = folder / "train", folder / "eval"
    # held-out: as many text rows as images, so that text_accuracy's standard error is as small as the others'
    for out, seed, images, videos, text in (
        (train, 0, settings.images, settings.videos, settings.images // 10),
        (held_out, 1, settings.eval_images, settings.eval_videos, settings.eval_images),
    ):
        if not up_to_date(out, seed, images, videos, text):
            write_shapesworld(out, images, seed=seed, image_size=112, num_text=text)
            write_shapesworld_videos(out, videos, seed=seed, image_size=112)
    return train, held_out


def train_stages(
    train: Path,
    held_out: Path,
    out: Path,
    settings: Settings,
    parts: tuple[Path, Path],
    dtype: str = "auto",
    lap=lambda name: None,
) -> Path:
    """The three stages: stage 1 from the pretrained parts (`parts`: a vision encoder folder and a Qwen3 folder, with a
    new connector), then each from the previous one's final model; `lap(name)` is called as each one ends."""
    previous = None
    for stage, steps in zip((1, 2, 3), settings.steps, strict=True):
        overrides = {"data": str(train), "val_data": str(held_out), "out_dir": str(out / f"stage{stage}"),
                     "max_steps": steps, "save_every": 0, "eval_every": max(1, steps // 4), "dtype": dtype}  # fmt: skip
        # Compiling the decoder blocks costs ~20 s and makes a stage-1 step ~35 % faster: it pays after ~50 steps.
        # Stage 2 gained ~8 % a step for 15 s of compiling (docs/LOG.md): not worth it for 100 steps.
        overrides["compile"] = stage == 1 and steps >= 100
        if stage == 1:  # as Molmo2 starts: a pretrained encoder and LLM, joined by a new connector
            overrides.update(vision_path=str(parts[0]), qwen3_path=str(parts[1]), output_vocabulary="data")
        else:
            overrides["init_from"] = str(previous)
        shutil.rmtree(out / f"stage{stage}", ignore_errors=True)  # a new demo run, not a resumed one
        run(load_config(f"tiny_stage{stage}", overrides))
        previous = out / f"stage{stage}" / "final"
        lap(f"stage{stage}")
    return previous


def picture(model, processor, held_out: Path, out: Path, frames: int) -> None:
    """Held-out images with their pointing answers over the true masks, and one video strip."""
    tiles = []
    rows = [json.loads(line) for line in (held_out / "images.jsonl").read_text().splitlines()][:8]
    queries = [(row, next(a for a in row["annotations"] if a["task"] == "pointing" and a["points"])) for row in rows]
    requests = [
        Request(POINT_PROMPT.format(label=a["label"]), [held_out / row["image"]], max_new_tokens=72)
        for row, a in queries
    ]
    for (row, annotation), answer in zip(queries, generate_answers(model, processor, requests), strict=True):
        mask = np.array(PIL.Image.open(held_out / row["masks"]))
        ids = sorted({int(mask[int(y), int(x)]) for x, y in annotation["points"]} - {0})
        image = overlay_masks(PIL.Image.open(held_out / row["image"]), mask, ids)
        tiles.append(caption_under(points_picture(answer, image=image), annotation["label"]))
    sheets = [grid(tiles, columns=4)]
    videos = [json.loads(line) for line in (held_out / "videos.jsonl").read_text().splitlines()]
    for row in videos:
        annotation = next((a for a in row["annotations"] if a["task"] == "pointing" and a["points"]), None)
        if annotation:
            video = load_video(held_out / row["video"], max_frames=frames)
            answer = generate_answers(
                model,
                processor,
                [Request(VIDEO_POINT_PROMPT.format(label=annotation["label"]), video=video, max_new_tokens=160)],
            )[0]
            sheets.append(caption_under(points_picture(answer, video=video), f"video: {annotation['label']}"))
            break
    grid(sheets, columns=1).save(out / "points.png")


RIGHT, WRONG, TRUTH = (0, 120, 0), (200, 0, 0), (100, 100, 100)


def answer_lines(queries: list[tuple[Query, str]], answers: list[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """Question, answer (green when Molmo2's metric scores it right, red when not) and truth, as coloured lines."""
    lines = []
    for (query, truth), answer in zip(queries, answers, strict=True):
        right = all(v > 0.5 for k, v in score(query, answer).items() if k.endswith(("accuracy", "f1")))
        lines += [(f"Q: {query.request.question.splitlines()[0]}", (0, 0, 0)),
                  (f"model: {answer}", RIGHT if right else WRONG), (f"truth: {truth}", TRUTH)]  # fmt: skip
    return lines


def answers_picture(model, processor, held_out: Path, out: Path, frames: int, images: int = 4) -> None:
    """`answers.png`, the demo at a glance: held-out images and a video, each with a few questions, the model's answers
    (green when Molmo2's metric scores them right, red when not), the truth, and the pointing answer drawn."""
    rows = [json.loads(line) for line in (held_out / "images.jsonl").read_text().splitlines()][:images]
    queries = []
    for row in rows:
        image = held_out / row["image"]
        by_task = {}
        for a in row["annotations"]:
            by_task.setdefault(a["task"], a)
        point = next(a for a in row["annotations"] if a["task"] == "pointing" and a["points"])
        count = next(a for a in row["annotations"] if a["task"] == "counting" and a["label"] == point["label"])
        queries += [
            (Query("caption", Request(CAPTION_PROMPTS[0], [image], max_new_tokens=48),
                   {(o["colour"], o["shape"]) for o in row["objects"]}, row, held_out), by_task["caption"]["caption"]),
            (Query("vqa", Request(question_text(by_task["vqa"]), [image], max_new_tokens=8),
                   by_task["vqa"]["answer"], row, held_out), by_task["vqa"]["answer"]),
            (Query("count", Request(COUNT_PROMPT.format(label=count["label"]), [image], max_new_tokens=72),
                   count["count"], row, held_out), str(count["count"])),
            (Query("point", Request(POINT_PROMPT.format(label=point["label"]), [image], max_new_tokens=72),
                   point["points"], row, held_out), f"{len(point['points'])} point(s), objects outlined"),
        ]  # fmt: skip
    video_pair = video_queries(held_out, frames, limit=1, per_kind=1)  # one video: a question and a pointing query
    queries += [(q, q.truth if q.kind == "video_qa" else f"{len(q.truth)} point(s)") for q in video_pair]
    answers = generate_answers(model, processor, [q.request for q, _ in queries])
    tiles, width = [], 300
    for start in range(0, 4 * len(rows), 4):  # four queries an image
        row = queries[start][0].row
        point_query, point_answer = queries[start + 3][0], answers[start + 3]
        mask = np.array(PIL.Image.open(held_out / row["masks"]))
        ids = sorted({int(mask[int(y), int(x)]) for x, y in point_query.truth} - {0})
        picture = points_picture(point_answer, image=overlay_masks(PIL.Image.open(held_out / row["image"]), mask, ids))
        picture = picture.resize((width, width * picture.height // picture.width), PIL.Image.NEAREST)
        tiles.append(stack([picture, text_block(answer_lines(queries[start : start + 4], answers[start : start + 4]),
                                                width)]))  # fmt: skip
    video_frames, times = video_pair[0].request.video
    point_answer = answers[-1]
    strip = []
    for frame, t in list(zip(video_frames, times, strict=True))[:16]:  # the first 16 frames, points drawn at their time
        here = [(x / 1000 * frame.shape[1], y / 1000 * frame.shape[0]) for pt, _, x, y in parse_points(point_answer)
                if round(pt, 1) == round(t, 1)]  # fmt: skip
        strip.append(caption_under(draw_points(PIL.Image.fromarray(frame), here), f"{t:.1f}s"))
    lines = [("video:", (0, 0, 0))] + answer_lines(queries[-2:], answers[-2:])
    strip = grid(strip, columns=8)
    sheet = stack([grid(tiles, columns=len(tiles)), stack([strip, text_block(lines, strip.width)])])
    sheet.save(out / "answers.png")


ROWS = [
    "caption_accuracy",
    "vqa_accuracy",
    "count_accuracy",
    "point_f1",
    "video_qa_accuracy",
    "video_point_f1",
    "text_accuracy",
]


def report(metrics: dict) -> str:
    """The table: each metric and its blank-media value, both ± their standard errors, and the target; the seconds."""

    def cell(name: str) -> str:
        return f"{metrics[name]:.3f} ± {metrics[name + '_stderr']:.3f}" if name in metrics else ""

    lines = [f"{'metric':20s} {'held-out':>15s} {'blank':>15s} {'target':>7s}"]
    for name in ROWS:
        target = f"{TARGETS[name]:.2f}" if name in TARGETS else ""
        lines.append(f"{name:20s} {cell(name):>15s} {cell('blank_' + name):>15s} {target:>7s}")
    parts = ", ".join(f"{k.removeprefix('seconds_')} {v:.0f}" for k, v in metrics.items() if k.startswith("seconds_"))
    lines.append(f"{'seconds':20s} {metrics['seconds']:15.0f}   ({parts})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a two-minute version (for the tests)")
    parser.add_argument("--data-only", action="store_true", help="write the data and stop (`make pretrained`)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--data", default="data/demo")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16"), help="auto: bf16 where the CPU has it"
    )
    parser.add_argument(
        "--deterministic", action="store_true", help=f"the same numbers on every run: {DETERMINISTIC_THREADS} threads, "
        "deterministic kernels (for comparing recipes; docs/LOG.md)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.deterministic:
        torch.set_num_threads(DETERMINISTIC_THREADS)
        torch.use_deterministic_algorithms(True)
    start = last = time.time()
    seconds = {}

    def lap(name: str) -> None:
        nonlocal last
        seconds[f"seconds_{name}"], last = time.time() - last, time.time()

    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, held_out = write_data(Path(args.data), settings)
    lap("data")
    if args.data_only:
        return {}
    try:
        parts = pretrained_folders(Path(args.data) / "pretrained")
    except FileNotFoundError as error:  # a package without its parts: one line, not a traceback
        parser.error(str(error))
    lap("pretrained")
    final = train_stages(train, held_out, out, settings, parts, args.dtype, lap)
    model, processor = load_model(final)
    # batches of 64: 15% less CPU time than 32 for the same answers (docs/LOG.md)
    metrics, records = evaluate(
        model, processor, held_out, max_frames=settings.eval_frames, per_kind=settings.per_kind, batch_size=64,
        blank_limit=settings.blank_limit,
    )  # fmt: skip
    lap("evaluation")
    picture(model, processor, held_out, out, settings.eval_frames)
    answers_picture(model, processor, held_out, out, settings.eval_frames)
    lap("picture")
    metrics["seconds"] = time.time() - start
    metrics.update(seconds)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "answers.json").write_text(json.dumps(records, indent=1) + "\n")
    print(report(metrics))
    print(
        f"\nwritten: {out / 'metrics.json'}, {out / 'points.png'}, {out / 'answers.png'}\n"
        "open the model: .venv/bin/nanomolmo2 serve "
        f"--checkpoint {final} (then http://127.0.0.1:7860), or .venv/bin/nanomolmo2 chat --checkpoint {final} "
        f"--image {held_out / 'images' / '000000.png'}"
    )
    return metrics


if __name__ == "__main__":
    main()
