"""The public datasets in miniature: PixMo / Molmo2 / tulu tables in their real column layouts, whose media are
ShapesWorld images and videos served by a local HTTPS server — with the faults of the real web: 404s, wrong
hashes, a transfer cut short, a slow host.

`build_tables(server, seed, images, videos)` returns {dataset name: (rows, pyarrow schema)} and registers the
media on the server; the videos of Molmo2-VideoPoint come as files of the dataset repository
(`generated_videos/<id>.mp4`), as the real one ships its generated videos.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa

from nanomolmo2.shapesworld.images import make_row
from nanomolmo2.shapesworld.tasks import text_messages
from nanomolmo2.shapesworld.videos import make_video, video_row

XY = pa.struct([("x", pa.float64()), ("y", pa.float64())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMAS = {
    "pixmo-cap": pa.schema(
        [("image_url", pa.string()), ("caption", pa.string()), ("transcripts", pa.list_(pa.string()))]
    ),
    "pixmo-points": pa.schema(
        [
            ("image_url", pa.string()),
            ("image_sha256", pa.string()),
            ("points", pa.list_(XY)),
            ("count", pa.int64()),
            ("label", pa.string()),
            ("collection_method", pa.string()),
        ]
    ),  # fmt: skip
    "pixmo-count": pa.schema(
        [
            ("image_url", pa.string()),
            ("image_sha256", pa.string()),
            ("count", pa.int64()),
            ("points", pa.list_(XY)),
            ("label", pa.string()),
        ]
    ),  # fmt: skip
    "pixmo-ask-model-anything": pa.schema(
        [("image_url", pa.string()), ("image_sha256", pa.string()), ("question", pa.string()), ("answer", pa.string())]
    ),
    "pixmo-cap-qa": pa.schema([("image_url", pa.string()), ("question", pa.string()), ("answer", pa.string())]),
    "Molmo2-MultiImageQA": pa.schema(
        [
            ("image_urls", pa.list_(pa.string())),
            ("qa_pairs", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string())]))),
        ]
    ),  # fmt: skip
    "Molmo2-VideoPoint": pa.schema(
        [
            ("video_id", pa.string()),
            ("video_source", pa.string()),
            ("question", pa.string()),
            ("label", pa.string()),
            ("count", pa.int64()),
            ("category", pa.string()),
            ("video_duration", pa.float64()),
            ("clip_start", pa.float64()),
            ("clip_end", pa.float64()),
            ("two_fps_timestamps", pa.list_(pa.float64())),
            ("points", pa.list_(pa.list_(XY))),
            ("annotator_unsure", pa.bool_()),
        ]
    ),  # fmt: skip
    "tulu-3-sft-mixture": pa.schema([("id", pa.string()), ("messages", pa.list_(MESSAGE))]),
}


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mp4(frames: np.ndarray, fps: float, folder: Path) -> bytes:
    import cv2

    path = folder / "clip.mp4"
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.read_bytes()


def percent(points: list, size: int) -> list[dict]:
    return [{"x": round(100 * x / size, 3), "y": round(100 * y / size, 3)} for x, y in points]


def serve_image(server, seed: int, index: int, size: int) -> tuple[str, str | None, dict]:
    """(URL, sha256 the table states, the ShapesWorld row) of image `index`; every tenth image misbehaves:
    3 -> 404, 5 -> the table states a wrong hash, 7 -> the transfer is cut short, 8 -> a slow host."""
    row, scene = make_row(seed, index, "easy", size)
    body, path = png(scene.image), f"/img/{seed}-{index}.png"
    sha = hashlib.sha256(body).hexdigest()
    fault = index % 10
    if fault == 3:
        pass  # no route: 404
    elif fault == 5:
        server.routes[path] = ("ok", body)
        sha = hashlib.sha256(body + b"x").hexdigest()
    elif fault == 7:
        server.routes[path] = ("broken", body)
    elif fault == 8:
        server.routes[path] = ("slow", body, 0.2)
    else:
        server.routes[path] = ("ok", body)
    return server.url(path), sha, row


def build_tables(server, seed: int, images: int, videos: int, size: int, work: Path) -> dict:
    """{name: (rows, schema)} plus {"Molmo2-VideoPoint/generated_videos": {file name: bytes}}: `images` ShapesWorld
    images of `size` pixels (dataset `seed`) and `videos` videos; `work` is a scratch folder for the video encoder."""
    tables = {name: [] for name in SCHEMAS}
    served = [serve_image(server, seed, i, size) for i in range(images)]
    for url, sha, row in served:
        annotations = row["annotations"]
        caption = next(a["caption"] for a in annotations if a["task"] == "caption")
        tables["pixmo-cap"].append({"image_url": url, "caption": caption, "transcripts": [caption.lower()]})
        for a in annotations:
            if a["task"] == "pointing":
                method = "counting" if len(a["points"]) > 1 else "pointing"
                tables["pixmo-points"].append(
                    {"image_url": url, "image_sha256": sha, "points": percent(a["points"], size),
                     "count": len(a["points"]), "label": a["label"], "collection_method": method}
                )  # fmt: skip
            elif a["task"] == "counting" and a["count"]:
                tables["pixmo-count"].append(
                    {"image_url": url, "image_sha256": sha, "count": a["count"], "label": a["label"],
                     "points": [{"x": x, "y": y} for x, y in a["points"]]}
                )  # fmt: skip
            elif a["task"] == "vqa":
                tables["pixmo-ask-model-anything"].append(
                    {"image_url": url, "image_sha256": sha, "question": a["question"], "answer": a["answer"]}
                )
        # pixmo-cap-qa: a plain question, or earlier turns in its "[USER] ... [ASSISTANT] ..." form
        questions = [a for a in annotations if a["task"] == "vqa"][:2]
        if len(questions) == 2:
            first, second = questions
            tables["pixmo-cap-qa"].append({"image_url": url, "question": first["question"], "answer": first["answer"]})
            turns = f"[USER] {first['question']} [ASSISTANT] {first['answer']} [USER] {second['question']} [ASSISTANT]"
            tables["pixmo-cap-qa"].append({"image_url": url, "question": turns, "answer": second["answer"]})
    for (url_a, _, row_a), (url_b, _, row_b) in zip(served[0::2], served[1::2], strict=False):
        count_a, count_b = len(row_a["objects"]), len(row_b["objects"])
        tables["Molmo2-MultiImageQA"].append(
            {"image_urls": [url_a, url_b],
             "qa_pairs": [{"question": "Which image has more shapes?",
                           "answer": "The first." if count_a > count_b else "The second." if count_b > count_a
                           else "Neither."}]}
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    for i in range(images // 2):
        tables["tulu-3-sft-mixture"].append({"id": f"tulu-{seed}-{i}", "messages": text_messages(rng)})
    generated = {}
    for i in range(videos):
        video = make_video(seed, i, "easy", size=size, seconds=(2, 4))
        vrow = video_row(seed, i, "easy", video)
        video_id = f"shapes-{seed}-{i}"
        generated[f"{video_id}.mp4"] = mp4(video.frames, video.fps, work)
        duration = float(vrow["duration"])
        for a in (a for a in vrow["annotations"] if a["task"] == "pointing" and a["points"]):
            times = sorted({t for t, _, _ in a["points"]})
            frames = [percent([(x, y) for t2, x, y in a["points"] if t2 == t], size) for t in times]
            tables["Molmo2-VideoPoint"].append(
                {"video_id": video_id, "video_source": "generated", "question": f"How many {a['label']} are there?",
                 "label": a["label"], "count": max(len(f) for f in frames), "category": "objects",
                 "video_duration": duration, "clip_start": 0.0, "clip_end": duration, "two_fps_timestamps": times,
                 "points": frames, "annotator_unsure": False}
            )  # fmt: skip
    result = {name: (rows, SCHEMAS[name]) for name, rows in tables.items()}
    result["Molmo2-VideoPoint/generated_videos"] = generated
    return result
