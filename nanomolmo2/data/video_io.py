"""Reading videos: Molmo2's frame sampling, and decoding only the sampled frames with OpenCV.

Sampling (Molmo2's training rule, "uniform last frame"): at most `max_fps` frames per second and at most
`max_frames` frames. A clip short enough for both gets frames at 0, 0.5, 1.0, ... seconds plus one at its
last frame; a longer one gets `max_frames` evenly spaced frames, both ends included. transformers'
`Molmo2VideoProcessor` samples differently (evenly spaced indices, 64 frames, capped at max_fps); that rule
is here too, for comparisons with it.

Decoding seeks to far-away frames and steps through near ones, so a long video is never decoded whole.
A container that reports more frames than it holds is handled by counting the frames it really has.

Memory is bounded: a video whose frames are larger than MAX_FRAME_PIXELS is refused from its header, before any
frame is decoded (and again if a decoded frame turns out larger than the header said), and `decode_video` can
resize each frame to the processor's crop as soon as it is decoded, so 128 frames of a 4K video never sit in
memory at full size (~3 GB as uint8, ~13 GB as float).

OpenCV hands the file to FFmpeg, which would follow what the bytes say: a "video" that is an HLS playlist or a
concat list makes FFmpeg open URLs or other local files. Unless the environment already sets
OPENCV_FFMPEG_CAPTURE_OPTIONS, FFmpeg is restricted to local files and to the container formats of real videos
(FFMPEG_OPTIONS), and OpenCV always gets an absolute path (never something FFmpeg could read as a protocol).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from .image_preprocessing import resize_uint8

FFMPEG_OPTIONS = "protocol_whitelist;file|format_whitelist;mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_OPTIONS)  # OpenCV reads it at every open
SEEK_DISTANCE = 48  # frames: closer than this, decoding forward is cheaper than a seek
MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD: larger frames are refused


class VideoError(ValueError):
    """A video that cannot be used: unreadable, truncated, empty, or asked for a time it does not have."""


def sample_frame_times(duration: float, max_fps: float = 2.0, max_frames: int = 128) -> list[float]:
    """Times (seconds from the clip start) of the frames to use for a clip whose last frame is at `duration`."""
    if duration <= 0:
        return [0.0]
    if duration <= (max_frames - 1) / max_fps:
        step = 1.0 / max_fps
        times = [k * step for k in range(math.ceil(duration / step - 1e-9))]  # 0, 0.5, ... < duration
        return times + [float(duration)]
    return np.linspace(0.0, duration, max_frames).tolist()


def transformers_frame_indices(total_frames: int, fps: float, num_frames: int = 64, max_fps: float = 2.0) -> list[int]:
    """The frame indices transformers' Molmo2VideoProcessor samples (its default `do_sample_frames` path)."""
    target = num_frames
    if fps > max_fps:
        target = min(target, int(total_frames / fps * max_fps))
    target = max(min(target, total_frames), 1)
    return torch.arange(0, total_frames, total_frames / target).int().tolist()  # float32 steps, as transformers


def _open(path: Path) -> tuple[cv2.VideoCapture, float, int]:
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path.absolute()))
    if not capture.isOpened():
        raise VideoError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not fps or fps <= 0 or count <= 0:
        capture.release()
        raise VideoError(f"{path}: no frames (fps {fps}, frame count {count})")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        _check_size(path, width, height)
    except VideoError:
        capture.release()
        raise
    return capture, fps, count


def _check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(f"{path}: frames of {width}x{height} pixels, more than the limit of {MAX_FRAME_PIXELS}")


def count_frames(path: str | Path) -> int:
    """The number of frames that really decode (containers can claim more than they hold)."""
    capture, _, _ = _open(Path(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def read_frames(path: str | Path, indices: list[int]) -> np.ndarray:
    """Decode the frames at sorted `indices` -> uint8 RGB `[len(indices), H, W, 3]`; raises VideoError at the end."""
    return _decode(Path(path), indices)[0]


def _decode(path: Path, indices: list[int], frame_size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """read_frames, each frame resized to frame_size x frame_size as it is decoded (if given); and the (width,
    height) of the decoded frames before any resizing."""
    capture, _, _ = _open(path)
    frames, position, size = [], 0, (0, 0)  # position = index of the frame the next grab() returns
    try:
        for index in indices:
            if index < position or index - position > SEEK_DISTANCE:
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = index
            while position <= index:
                if not capture.grab():
                    raise VideoError(f"{path}: frame {index} cannot be decoded (the video ends at {position})")
                position += 1
            ok, frame = capture.retrieve()
            if not ok:
                raise VideoError(f"{path}: frame {index} cannot be decoded")
            size = (frame.shape[1], frame.shape[0])
            _check_size(path, *size)  # the header may have said less
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if frame_size is not None:  # the same resize as preprocessing, done now: one full frame in memory at a time
                pixels = resize_uint8(torch.from_numpy(frame).permute(2, 0, 1)[None], frame_size, frame_size)
                frame = pixels[0].permute(1, 2, 0).numpy()
            frames.append(frame)
    finally:
        capture.release()
    return np.stack(frames), size


def load_video(
    path: str | Path,
    max_fps: float = 2.0,
    max_frames: int = 128,
    clip: tuple[float, float] | None = None,
    sampling: str = "molmo2",
) -> tuple[np.ndarray, list[float]]:
    """Sampled frames, uint8 RGB `[T, H, W, 3]`, and their real timestamps in seconds (frame index / fps).

    clip: (start, end) seconds, as Molmo2-VideoPoint gives them; times stay relative to the video start.
    sampling: "molmo2" (the training rule above) or "transformers" (Molmo2VideoProcessor's rule).
    """
    frames, times, _ = decode_video(path, max_fps, max_frames, clip, sampling)
    return frames, times


def decode_video(
    path: str | Path,
    max_fps: float = 2.0,
    max_frames: int = 128,
    clip: tuple[float, float] | None = None,
    sampling: str = "molmo2",
    frame_size: int | None = None,
    relative: bool = False,
) -> tuple[np.ndarray, list[float], tuple[int, int]]:
    """`load_video`, each frame resized to `frame_size` x `frame_size` as it is decoded (when given, as
    preprocessing would resize it), and the (width, height) of the video's own frames (points are in those).
    relative: times from the clip's first frame (0.0), as Molmo2's loader labels a clip's frames
    (`load_video_torchcodec` in olmo/data/video_loader.py decodes at start + t and returns t)."""
    path = Path(path)
    capture, fps, count = _open(path)
    capture.release()
    for attempt in range(2):
        first, last = 0, count - 1
        if clip is not None:
            start, end = clip
            if start < 0 or start > last / fps or end < start:
                raise VideoError(f"{path}: clip {clip} is outside the video (0 to {last / fps:.2f} s)")
            first, last = round(start * fps), round(min(end, last / fps) * fps)
        if sampling == "transformers":
            indices = [first + i for i in transformers_frame_indices(last - first + 1, fps, max_frames, max_fps)]
        else:
            times = sample_frame_times((last - first) / fps, max_fps, max_frames)
            indices = sorted({min(first + round(t * fps), last) for t in times})
        try:
            frames, size = _decode(path, indices, frame_size)
            origin = first if relative else 0
            return frames, [(i - origin) / fps for i in indices], size
        except VideoError:
            real = count_frames(path)  # the container may claim frames it does not have
            if attempt or real == count or real == 0:
                raise
            count = real
    raise AssertionError("unreachable")
