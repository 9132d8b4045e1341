"""Evaluation: Molmo2's metrics, batched generation, the evaluation runner and pictures of points."""

from .metrics import count_match, hungarian, normalize_answer, point_f1, video_point_f1, vqa_match

__all__ = ["count_match", "hungarian", "normalize_answer", "point_f1", "video_point_f1", "vqa_match"]
