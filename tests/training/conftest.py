"""Shared fixtures for the training tests: a small ShapesWorld folder and a tiny, fast training config."""

from pathlib import Path

import pytest

from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.videos import write_shapesworld_videos
from nanomolmo2.training.config import load_config

SMALL_MODEL = {
    "model.llm.hidden_size": 32,
    "model.llm.num_layers": 2,
    "model.llm.num_heads": 2,
    "model.llm.num_kv_heads": 1,
    "model.llm.head_dim": 16,
    "model.llm.intermediate_size": 64,
    "model.vision.image_size": 56,
    "model.vision.hidden_size": 32,
    "model.vision.num_layers": 2,
    "model.vision.num_heads": 2,
    "model.vision.intermediate_size": 64,
    "model.vision.feature_layers": (-1,),
    "model.vision.max_crops": 0,
    "model.connector.pool_heads": 2,
    "model.connector.pool_head_dim": 16,
    "model.connector.pool_hidden_size": 32,
    "model.connector.projector_hidden_size": 64,
}


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    write_shapesworld(folder, num_images=40, seed=0, image_size=56)
    write_shapesworld_videos(folder, num_videos=6, seed=0, image_size=56, max_seconds=3)
    return folder


def tiny_config(data: Path, out: Path, stage: int = 1, **overrides):
    """tiny_stage{stage} shrunk to seconds per run (fp32 on CPU, no workers)."""
    settings = {
        **SMALL_MODEL,
        "data": str(data),
        "out_dir": str(out),
        "seq_len": 384,
        "batch_size": 2,
        "micro_batch_size": 2,
        "max_frames": 6,
        "num_workers": 0,
        "dtype": "float32",  # exact comparisons (resume == straight run) hold in fp32 on any CPU
        "output_vocabulary": "data",  # a head over the data's tokens: 8x faster steps than over all 151,936
        "max_steps": 6,
        "save_every": 0,
        "eval_every": 0,
        "warmup_connector": 2,
        "warmup_llm": 2,
        "activation_checkpointing": False,
        **overrides,
    }
    return load_config(f"tiny_stage{stage}", settings)
