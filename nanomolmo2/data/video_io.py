"""Reading videos: Molmo2's frame sampling, and decoding only the sampled frames with OpenCV.

Sampling (Molmo2's training rule, "uniform last frame"): at most `max_fps` frames per second and at most
`max_frames` frames. A clip short enough for both gets frames at 0, 0.5, 1.0, ... seconds plus one at its
last frame; a longer one gets `max_frames` evenly spaced frames, both ends included. transformers'
`Molmo2VideoProcessor` samples differently (evenly spaced indices, 64 frames, capped at max_fps); that rule
is here too, for comparisons with it.

Decoding seeks to far-away frames and steps through near ones, so a long video is never decoded whole.
A container that reports more frames than it holds is handled by counting the frames it really has.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

SEEK_DISTANCE = 48  # frames: closer than this, decoding forward is cheaper than a seek


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
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not fps or fps <= 0 or count <= 0:
        capture.release()
        raise VideoError(f"{path}: no frames (fps {fps}, frame count {count})")
    return capture, fps, count


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
    capture, _, _ = _open(Path(path))
    frames, position = [], 0  # position = index of the frame the next grab() returns
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
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    return np.stack(frames)


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
            return read_frames(path, indices), [i / fps for i in indices]
        except VideoError:
            real = count_frames(path)  # the container may claim frames it does not have
            if attempt or real == count or real == 0:
                raise
            count = real
    raise AssertionError("unreachable")
