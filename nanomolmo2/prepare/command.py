"""`nanomolmo2 prepare`: a Hugging Face dataset table -> the project's JSONL format (docs/DATA_FORMAT.md).

    nanomolmo2 prepare allenai/pixmo-points --out data/real            # the train tables from the Hub (cached)
    nanomolmo2 prepare allenai/pixmo-points --from hf/pixmo-points/data --out data/real   # tables on disk
    nanomolmo2 prepare HuggingFaceM4/ChartQA --out data/real --columns image=image,question=query,answer=label

Every dataset of a data folder writes OUT/<name>.jsonl; their media are shared in OUT/media.

1. read the table: parquet files or JSONL exported with `datasets` (a folder: every *.parquet / *.jsonl in it),
   or, without --from, the dataset's train tables fetched from the Hub into huggingface_hub's cache (hub_tables.py);
2. fetch the media the rows point to (download.py: https only, size limit, sha256 when given, resumable);
3. convert every row with its dataset's converter below, and group rows per image (or image set, or video
   clip): one JSONL line per image with all of its annotations;
4. write OUT/<name>.jsonl and OUT/<name>.report.json, both atomically and durably (formats/atomic.py). The
   report counts the rows read, the malformed rows (file:line and reason; skipped, never fatal: a non-finite
   number, nesting too deep, a value out of range), the rows left out because their media failed, and the media
   fetched / already present / failed, each failure with its reason. Only valid JSON is written (no NaN).

The media folder (and any --video-dir) must be inside OUT: a dataset is a self-contained folder, and training
reads media only from inside it (SECURITY.md). Several datasets can share one OUT and its media folder.

What each dataset becomes (points always end up in pixels of the EXIF-corrected image); the converters are
in prepare_images.py and prepare_video.py, the chat one here:
    pixmo-cap                  caption (the transcripts are not used)
    pixmo-points               pointing, or counting when collection_method is "counting"; percent -> pixels
    pixmo-count                counting; its points are already pixels
    pixmo-ask-model-anything   vqa
    pixmo-cap-qa               vqa, or chat when the question holds "[USER] ... [ASSISTANT] ..." turns
    pixmo-point-explanations   vqa; each <|POINT|> of parsed_response becomes Molmo2 points of the image
    Molmo2-MultiImageQA        vqa on a row with "images" (up to 5)
    Molmo2-VideoPoint          counting with [t, x, y] points on a video clip (prepare_video.py)
    tulu-3-sft-mixture         chat, text only (any table with a tulu-style `messages` column)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..formats.atomic import PART, atomic_file, sweep_stale
from .download import Downloader, DownloadReport, file_sha256, media_path
from .generic import Generic, chat_turns, inline_suffix, parse_columns
from .hub_tables import copy_into, fetch_snapshot, train_tables
from .images import (
    Size,
    ask_model_anything,
    cap_qa,
    image_size,
    multi_image_media,
    multi_image_qa,
    pixmo_cap,
    pixmo_count,
    pixmo_points,
    point_explanations,
    single_image,
)
from .tables import Media, SkipRow, read_rows, table_files
from .videos import VideoSources, video_size, videopoint, videopoint_fields, videopoint_media

log = logging.getLogger(__name__)
MAX_EXAMPLES = 1000  # malformed rows listed in the report (all are counted)
# What a malformed row raises in a converter (ArithmeticError: int(inf) and the like from a parquet table;
# RecursionError: nesting no parser foresaw). Anything else is a bug and stops the run.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, RecursionError)


def no_media(row: dict) -> list[Media]:
    return []


def no_fields(row: dict) -> dict:
    return {}


@dataclass(frozen=True)
class Converter:
    kind: str  # where the media go in an output row: "image", "images", "video"; "text" has none
    media: Callable[[dict], list[Media]]
    annotations: Callable[[dict, list[Size]], list[dict]]  # (row, (width, height) of each media file)
    fields: Callable[[dict], dict] = no_fields  # extra output fields; rows that differ in them are not grouped
    max_bytes: int = 64 << 20  # default download limit per file


def chat(row: dict, sizes: list[Size]) -> list[dict]:
    """tulu-3 `messages`: system turns go in front of the first user turn ("System: ...\n"); a last unanswered user
    turn is dropped."""
    return [{"task": "chat", "messages": chat_turns(row.get("messages"))}]


DATASETS = {
    "pixmo-cap": Converter("image", single_image, pixmo_cap),
    "pixmo-points": Converter("image", single_image, pixmo_points),
    "pixmo-count": Converter("image", single_image, pixmo_count),
    "pixmo-ask-model-anything": Converter("image", single_image, ask_model_anything),
    "pixmo-cap-qa": Converter("image", single_image, cap_qa),
    "pixmo-point-explanations": Converter("image", single_image, point_explanations),
    "Molmo2-MultiImageQA": Converter("images", multi_image_media, multi_image_qa),
    "Molmo2-VideoPoint": Converter("video", videopoint_media, videopoint, videopoint_fields, max_bytes=4 << 30),
    "tulu-3-sft-mixture": Converter("text", no_media, chat),
}


def dataset_name(dataset: str, columns: dict | None = None) -> str:
    """The table's name from what the user typed: "allenai/pixmo-points", "pixmo-points", "PIXMO-POINTS"; with a
    column mapping (the generic converter) any name: its last part."""
    if columns:
        name = dataset.split("/")[-1]
        if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
            raise UsageError(f"dataset name {dataset!r}: use letters, digits, '-', '_' and '.'")
        return name
    names = {name.lower(): name for name in DATASETS}
    name = dataset.split("/")[-1].lower()
    if name not in names:
        raise UsageError(
            f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)} (or give --columns for any other table)"
        )
    return names[name]


def converter_for(name: str, columns: dict | None) -> Converter:
    if not columns:
        return DATASETS[name]
    generic = Generic(columns)
    media = generic.media if generic.kind == "image" else no_media
    return Converter("images" if "image" in columns else "text", media, generic.annotations)


# -----------------------------------------------------------------------------
# the pipeline


class _MediaMissing(Exception):
    pass


def _write_atomically(path: Path, lines) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _inside(folder: Path, out: Path, flag: str) -> None:
    if not folder.resolve().is_relative_to(out.resolve()):
        raise UsageError(
            f"{flag} {folder} is outside --out {out}: training reads media only from inside a dataset's folder "
            f"(SECURITY.md); use a {flag} inside {out} (several datasets can share one --out)"
        )


def prepare(
    dataset: str,
    tables: str | Path,
    out: str | Path,
    media_dir: str | Path | None = None,
    downloader: Downloader | None = None,
    videos: VideoSources | None = None,
    limit: int | None = None,
    columns: dict[str, str] | None = None,
) -> dict:
    """Convert the table(s) at `tables`; fetch missing media with `downloader` (None: use what is on disk).
    columns: the generic converter's column mapping (generic.py) instead of a known dataset's converter.
    Returns the report (also written to OUT/<name>.report.json)."""
    name = dataset_name(dataset, columns)
    converter, files = converter_for(name, columns), table_files(tables)
    out = Path(out)
    media_dir = Path(media_dir) if media_dir else out / "media"
    videos = videos or VideoSources()
    _inside(media_dir, out, "--media-dir")
    for folder in videos.dirs:
        _inside(folder, out, "--video-dir")
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale(out, f".*{PART}")  # what a killed run left half written (the media folder: the downloader's)

    def locate(media: Media) -> tuple[str | None, Path | None]:
        """(URL to fetch or None, local path or None). Bytes held by the table are written out here, once."""
        if media.data is not None:
            path = media_dir / "inline" / f"{media.sha256}{inline_suffix(media.data)}"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(path, "wb") as f:
                    f.write(media.data)
            return None, path
        if media.url is not None:
            return media.url, media_path(media_dir, media.url)
        local = videos.find(media.video_id)
        if local is not None:
            return None, local
        url = videos.urls.get(media.video_id)
        return (url, media_path(media_dir, url)) if url else (None, None)

    # 1. the files the rows need (the table is read again in 3, rather than held in memory)
    jobs: dict[str, tuple[Path, str | None]] = {}
    conflicting = set()
    for _, row in read_rows(files, limit):
        try:
            medias = converter.media(row) if isinstance(row, dict) else []
        except MALFORMED:
            continue  # reported in 3
        for media in medias:
            url, path = locate(media)
            if url is None:
                continue
            sha = media.sha256.lower() if media.sha256 else None
            known = jobs.get(url, (path, None))[1]
            if sha and known and sha != known:
                conflicting.add(url)  # rows disagree on the image: it cannot be checked
            jobs[url] = (path, known or sha)

    # 2. fetch them (or, without a downloader, take what is already there)
    todo = [(url, path, sha) for url, (path, sha) in jobs.items() if url not in conflicting]
    if downloader is not None:
        fetched = downloader.fetch_all(todo)
    else:
        fetched = DownloadReport()
        for url, path, sha in todo:
            if path.is_file() and (sha is None or file_sha256(path) == sha):
                fetched.present.append(url)
            else:
                fetched.failed[url] = "missing: not downloaded (--no-download)"
    fetched.failed |= {url: "inconsistent sha256: rows of the table disagree" for url in conflicting}

    # 3. convert and group
    size_of = video_size if converter.kind == "video" else image_size
    sizes: dict[Path, Size | str] = {}
    unreadable: dict[str, str] = {}

    def measure(path: Path) -> Size:
        if path not in sizes:
            try:
                sizes[path] = size_of(path)
            except Exception as e:  # untrusted bytes: any decoder error means "unusable", reported, not fatal
                sizes[path] = f"unreadable media: {type(e).__name__}: {e}"
        if isinstance(sizes[path], str):
            unreadable[str(path)] = sizes[path]
            raise _MediaMissing
        return sizes[path]

    groups: dict[tuple, dict] = {}
    stats, skipped, malformed = Counter(), Counter(), []
    for source, row in read_rows(files, limit):
        stats["rows"] += 1
        try:
            if isinstance(row, Exception):
                raise row
            paths = []
            for media in converter.media(row):
                url, path = locate(media)
                if path is None or url in fetched.failed or not path.is_file():
                    raise _MediaMissing
                paths.append(path)
            media_sizes = [measure(p) for p in paths]
            annotations, fields = converter.annotations(row, media_sizes), converter.fields(row)
            json.dumps([annotations, fields], allow_nan=False)  # ValueError for NaN / inf: JSON has no such numbers
        except _MediaMissing:
            stats["rows_without_media"] += 1
            continue
        except SkipRow as e:
            skipped[str(e)] += 1
            continue
        except MALFORMED as e:
            stats["malformed_rows"] += 1
            if len(malformed) < MAX_EXAMPLES:
                malformed.append(f"{source}: {type(e).__name__}: {e}")
            if stats["malformed_rows"] <= 20:
                log.warning("skipped malformed row %s: %s: %s", source, type(e).__name__, e)
            continue
        key = (tuple(paths), tuple(sorted(fields.items()))) if paths else (source,)
        group = groups.setdefault(key, {"paths": paths, "sizes": media_sizes, "fields": fields, "annotations": []})
        group["annotations"] += annotations

    # 4. write
    target = out / f"{name}.jsonl"
    _write_atomically(
        target,
        (json.dumps(_line(name, i, converter.kind, g, out), allow_nan=False) for i, g in enumerate(groups.values())),
    )
    report = {
        "dataset": name,
        "tables": [str(f) for f in files],
        "output": str(target),
        "rows": stats["rows"],
        "lines": len(groups),
        "annotations": sum(len(g["annotations"]) for g in groups.values()),
        "malformed_rows": stats["malformed_rows"],
        "malformed_examples": malformed,
        "skipped_rows": dict(skipped),
        "rows_without_media": stats["rows_without_media"],
        "media": {
            "fetched": len(fetched.fetched),
            "present": len(fetched.present),
            "failed": len(fetched.failed),
            "failures": fetched.failed,
            "unreadable": unreadable,
        },
    }
    _write_atomically(out / f"{name}.report.json", [json.dumps(report, indent=1, allow_nan=False)])
    return report


def _line(name: str, index: int, kind: str, group: dict, out: Path) -> dict:
    line: dict = {"id": f"{name}-{index:07d}"}
    paths = [Path(os.path.relpath(p, out)).as_posix() for p in group["paths"]]  # relative to the JSONL's folder
    if kind in ("image", "video"):
        line[kind] = paths[0]
        line["width"], line["height"] = group["sizes"][0]
    elif kind == "images":
        line["images"] = paths
    return line | group["fields"] | {"annotations": group["annotations"]}


def summary(report: dict) -> str:
    media = report["media"]
    failures = DownloadReport(failed=media["failures"]).summary().splitlines()[1:]
    lines = [
        f"{report['dataset']}: {report['rows']} rows -> {report['lines']} lines "
        f"({report['annotations']} annotations) in {report['output']}",
        f"  media: fetched {media['fetched']}, already present {media['present']}, failed {media['failed']}"
        + (f", unreadable {len(media['unreadable'])}" if media["unreadable"] else ""),
        *["  " + line for line in failures],
        f"  left out: {report['rows_without_media']} rows whose media failed, "
        f"{report['malformed_rows']} malformed rows"
        + "".join(f", {n} {reason}" for reason, n in report["skipped_rows"].items()),
    ]
    if report["malformed_examples"]:
        lines.append(f"  first malformed row: {report['malformed_examples'][0]}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help=f"one of: {', '.join(DATASETS)} (an 'allenai/' prefix is fine); any name with --columns"
    )
    parser.add_argument(
        "--columns",
        help="any other table: KEY=COLUMN pairs, e.g. image=image,question=query,answer=label (prepare/generic.py)",
    )
    parser.add_argument(
        "--from",
        dest="tables",
        help="a .parquet/.jsonl table, or a folder of them (default: the dataset's train tables from the Hub)",
    )
    parser.add_argument("--out", required=True, help="output folder: <name>.jsonl and <name>.report.json")
    parser.add_argument("--media-dir", help="where fetched media go (default OUT/media; datasets can share one)")
    parser.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fetch missing media (--no-download: use only the files already in the media folder)",
    )
    parser.add_argument("--workers", type=int, default=16, help="parallel downloads")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to connect and get the headers")
    parser.add_argument("--read-timeout", type=float, default=30.0, help="longest silence while reading a file")
    parser.add_argument("--retries", type=int, default=3, help="retries of a failed transfer (5xx, 429, timeouts)")
    parser.add_argument("--max-bytes", type=int, help="size limit per file (default 64 MiB; 4 GiB for videos)")
    parser.add_argument("--video-dir", action="append", help="a folder of videos already on disk (repeatable)")
    parser.add_argument("--video-urls", help="JSON object video_id -> https URL (Molmo2-VideoPoint)")
    parser.add_argument("--limit", type=int, help="read only the first N rows (a quick try)")


def run(args: argparse.Namespace) -> None:
    start = time.time()
    columns = parse_columns(args.columns) if args.columns else None
    try:
        converter = converter_for(dataset_name(args.dataset, columns), columns)
        downloader = None
        if args.download:
            downloader = Downloader(
                workers=args.workers,
                timeout=args.timeout,
                read_timeout=args.read_timeout,
                retries=args.retries,
                max_bytes=args.max_bytes or converter.max_bytes,
            )
        tables, video_dirs, video_urls = args.tables, list(args.video_dir or []), args.video_urls
        if tables is None:  # from the Hub (its cache): the train split, and for videos their id table and files
            name = dataset_name(args.dataset, columns)
            repo_id = args.dataset if "/" in args.dataset else f"allenai/{name}"
            snapshot = fetch_snapshot(repo_id, name)
            tables = train_tables(snapshot, repo_id)
            if (snapshot / "youtube_id_to_urls_mapping.json").is_file() and video_urls is None:
                video_urls = str(snapshot / "youtube_id_to_urls_mapping.json")
            if (snapshot / "generated_videos").is_dir():
                media = Path(args.media_dir) if args.media_dir else Path(args.out) / "media"
                video_dirs.append(str(copy_into(snapshot / "generated_videos", media / "generated_videos")))
        videos = VideoSources.from_args(video_dirs, video_urls)
        report = prepare(args.dataset, tables, args.out, args.media_dir, downloader, videos, args.limit, columns)
    except RuntimeError as e:  # e.g. pyarrow missing for a parquet table
        raise UsageError(str(e)) from None
    print(
        f"{summary(report)}\n  report: {Path(args.out) / (report['dataset'] + '.report.json')} "
        f"({time.time() - start:.1f}s)"
    )
