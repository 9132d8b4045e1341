"""Weight folders (nanomolmo2/formats/weights.py): a sharded index names files of its own folder only, a malformed
index is a clear CheckpointError, a folder write leaves no half folder and sweeps what a killed write left, and
reading takes only the tensors asked for, from the shards that hold them, once."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nanomolmo2.formats import weights
from nanomolmo2.formats.atomic import hold
from nanomolmo2.formats.weights import CheckpointError, read_weights, subtree, write_folder_atomically
from nanomolmo2.models import NanoMolmo2

from .hub_cache import LLM_SHARD, VISION_SHARD, sharded_molmo2_folder, tiny_qwen3_folder


def sharded(folder, weight_map: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_a_sharded_index_loads_its_own_shards(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "model-1.safetensors")
    save_file({"b": torch.zeros(3)}, tmp_path / "model-2.safetensors")
    sharded(tmp_path, {"a": "model-1.safetensors", "b": "model-2.safetensors"})
    assert sorted(read_weights(tmp_path)) == ["a", "b"]


@pytest.mark.parametrize("name", ["ABSOLUTE", "../elsewhere/model.safetensors", "sub/../../x.safetensors", "..", ""])
def test_shard_names_must_stay_in_the_folder(tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    save_file({"secret": torch.ones(1)}, elsewhere / "model.safetensors")  # what an escaping name would load
    name = str(elsewhere / "model.safetensors") if name == "ABSOLUTE" else name
    sharded(tmp_path / "model", {"w": name})
    with pytest.raises(CheckpointError, match="is not a file name inside"):
        read_weights(tmp_path / "model")


@pytest.mark.parametrize(
    "index", ["{not json", "[]", '{"weight_map": 5}', '{"weight_map": {"w": 3}}', '{"metadata": {}}', "[" * 100_000]
)
def test_a_malformed_index_is_a_clear_error(tmp_path, index):
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        read_weights(tmp_path)


def test_a_folder_write_sweeps_what_a_killed_write_left(tmp_path):
    stale_tmp, stale_old = tmp_path / ".final.tmp-abc123", tmp_path / ".final.old-999"
    for folder in (stale_tmp, stale_old):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    busy = tmp_path / ".final.tmp-busy"  # another process writing right now: it holds its temp folder
    busy.mkdir()
    lock = hold(busy)
    try:
        write_folder_atomically(
            tmp_path / "final", {"config.json": {"a": 1}, "model.safetensors": {"w": torch.ones(2)}}
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == [".final.tmp-busy", "final"]
    finally:
        os.close(lock)
    assert json.loads((tmp_path / "final" / "config.json").read_text()) == {"a": 1}


@pytest.fixture
def recording_reads(monkeypatch):
    """safe_open, recording each file opened and each (file, key) tensor read."""
    opened, read = [], []
    real = weights.safe_open

    class Recording:
        def __init__(self, file, framework):
            opened.append(Path(file).name)
            self.file, self.handle = Path(file).name, real(file, framework=framework)

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.handle.keys()

        def get_tensor(self, key):
            read.append((self.file, key))
            return self.handle.get_tensor(key)

    monkeypatch.setattr(weights, "safe_open", Recording)
    return opened, read


def test_a_filter_reads_only_its_tensors_and_skips_shards_without_them(tmp_path, recording_reads):
    opened, read = recording_reads
    save_file({"a.x": torch.ones(2), "b.y": torch.zeros(1)}, tmp_path / "model-1.safetensors")
    save_file({"b.z": torch.zeros(3)}, tmp_path / "model-2.safetensors")
    sharded(tmp_path, {"a.x": "model-1.safetensors", "b.y": "model-1.safetensors", "b.z": "model-2.safetensors"})
    assert list(read_weights(tmp_path, keep=lambda key: key.startswith("a."))) == ["a.x"]
    assert opened == ["model-1.safetensors"] and read == [("model-1.safetensors", "a.x")]


def test_composing_reads_the_vit_and_the_pooling_once_and_nothing_else(tmp_path, recording_reads):
    """Molmo2's ViT + Qwen3 from a Molmo2 checkpoint sharded as released (LLM blocks in one shard; ViT, pooling,
    projector and lm_head in the other): the LLM shard is never opened, no LLM or projector tensor is read, no
    file is opened twice, and the weights are those that reading every tensor (load_file) gives."""
    # Imported after nanomolmo2.models: imported first, formats.molmo2 would meet the models package half-initialised.
    from nanomolmo2.formats.molmo2 import molmo2_config, molmo2_state_to_ours

    opened, read = recording_reads
    sharded_molmo2_folder(tmp_path / "molmo2")
    tiny_qwen3_folder(tmp_path / "qwen3")
    model = NanoMolmo2.from_molmo2_and_qwen3(tmp_path / "molmo2", tmp_path / "qwen3")
    assert LLM_SHARD not in opened and len(opened) == len(set(opened)) == 2  # the ViT shard, Qwen3's file
    molmo2_keys = [key for file, key in read if file == VISION_SHARD]
    assert molmo2_keys and len(read) == len(set(read))
    assert all(
        key.startswith(("model.vision_backbone.image_vit.", "model.vision_backbone.image_pooling_2d."))
        for key in molmo2_keys
    )

    everything = {**load_file(tmp_path / "molmo2" / LLM_SHARD), **load_file(tmp_path / "molmo2" / VISION_SHARD)}
    config = molmo2_config(json.loads((tmp_path / "molmo2" / "config.json").read_text()))
    expected = molmo2_state_to_ours(everything, config)
    for prefix, module in (("vision.", model.vision), ("connector.pool.", model.connector.pool)):
        got = module.state_dict()
        assert got.keys() == subtree(expected, prefix).keys()
        assert all(torch.equal(got[k], v) for k, v in subtree(expected, prefix).items())
