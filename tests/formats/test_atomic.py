"""Durable atomic writes (nanomolmo2/formats/atomic.py) and every writer that relies on them: the files are fsynced
before the rename that publishes them and the folder after it (checkpoints, final/ model folders, prepared
datasets, downloads); a failed write leaves nothing; only the temp files of dead writers are swept."""

import os
from pathlib import Path

import pytest
import torch

from nanomolmo2.formats import atomic
from nanomolmo2.formats.atomic import atomic_file, sweep_stale
from nanomolmo2.formats.weights import write_folder_atomically
from nanomolmo2.training.checkpoint import save_checkpoint
from nanomolmo2.training.distributed import DistributedEnv


@pytest.fixture
def events(monkeypatch) -> list[tuple]:
    """Every fsync (by the path of its descriptor) and every rename / replace, in order."""
    seen = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def record_fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def record(kind, original):
        def moved(src, dst, *args, **kwargs):
            seen.append((kind, os.path.abspath(src), os.path.abspath(dst)))
            return original(src, dst, *args, **kwargs)

        return moved

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "rename", record("rename", rename))
    monkeypatch.setattr(os, "replace", record("replace", replace))
    return seen


def assert_durable(events: list[tuple], final: Path) -> None:
    """`final` was published by a rename whose source had every file and folder fsynced before it, and the parent
    folder was fsynced after it."""
    final = os.path.abspath(final)
    at = next(i for i, e in enumerate(events) if e[0] in ("rename", "replace") and e[2] == final)
    source = events[at][1]
    synced = {e[1] for e in events[:at] if e[0] == "fsync"}
    if Path(final).is_dir():
        names = {os.path.relpath(os.path.join(root, f), final) for root, _, files in os.walk(final) for f in files}
        assert names and {os.path.join(source, n) for n in names} <= synced, (names, synced)
    assert source in synced
    assert ("fsync", os.path.dirname(final)) in events[at + 1 :]


def test_a_checkpoint_is_on_disk_before_its_name(tmp_path, events):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path, 1, model, torch.optim.AdamW(model.parameters()), {}, DistributedEnv(), 2)
    assert_durable(events, path)


def test_a_model_folder_is_on_disk_before_its_name(tmp_path, events):
    write_folder_atomically(tmp_path / "final", {"config.json": {"a": 1}, "model.safetensors": {"w": torch.ones(2)}})
    assert_durable(events, tmp_path / "final")


def test_an_atomic_file_is_on_disk_before_its_name(tmp_path, events):
    with atomic_file(tmp_path / "data.jsonl", "w") as f:
        f.write("{}\n")
    assert_durable(events, tmp_path / "data.jsonl")


def test_prepared_datasets_and_downloads_are_written_durably():
    """The prepare command and the downloader write through atomic_file (whose durability is tested above)."""
    from nanomolmo2.prepare import command, download

    assert command.atomic_file is atomic.atomic_file and download.atomic_file is atomic.atomic_file


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "kept.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "kept.txt", "w") as f:
        f.write("half of the new")
        raise RuntimeError("the disk is full")
    assert (tmp_path / "kept.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_only_dead_writers_temp_files_are_swept(tmp_path):
    (tmp_path / ".a.jsonl.dead.part").write_text("a killed writer's")
    (tmp_path / ".b.jsonl.link.part").symlink_to(tmp_path / "target")  # a link: removed, its target never touched
    (tmp_path / "target").write_text("keep")
    with atomic_file(tmp_path / "c.jsonl", "w") as f:  # a live writer holds its temp file
        f.write("x")
        removed = sweep_stale(tmp_path, ".*.part")
        assert sorted(p.name for p in removed) == [".a.jsonl.dead.part", ".b.jsonl.link.part"]
        assert len(list(tmp_path.glob(".c.jsonl.*.part"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "target"]
