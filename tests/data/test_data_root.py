"""Datasets named in a data folder, and Molmo2's sampling rates worked out by hand."""

import json

import pytest

from nanomolmo2.data.data_root import Entry, build_mixture, dataset_files, parse_mixture
from nanomolmo2.data.mixture import Mixture, Weighted
from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.videos import write_shapesworld_videos


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    write_shapesworld(folder, num_images=6, seed=0, image_size=56)
    write_shapesworld_videos(folder, num_videos=2, seed=0, image_size=56, max_seconds=3)
    return folder


class Rows(list):
    """A stand-in dataset of n rows."""


def rates(groups) -> list[float]:
    return [round(float(p), 6) for p in Mixture(groups).probabilities]


def test_sqrt_size_inside_groups_with_molmo2s_overrides():
    a, b, c, d = Rows(range(100)), Rows(range(400)), Rows(range(100)), Rows(range(9))
    # sqrt sizes: A 10 | B 20, C 10 | D 3 -> A 0.6, B 0.3 * 20/30, C 0.3 * 10/30, D 0.1
    assert rates([(0.6, [a]), (0.3, [b, c]), (0.1, [d])]) == [0.6, 0.2, 0.1, 0.1]
    # C counted as 400 rows (Molmo2's (name, size) form): B and C share the group equally
    assert rates([(0.6, [a]), (0.3, [b, Weighted(c, size=400)]), (0.1, [d])]) == [0.6, 0.15, 0.15, 0.1]
    # a sampling rate of 1.5 on C: 15 against B's 20
    assert rates([(0.6, [a]), (0.3, [b, Weighted(c, rate=1.5)]), (0.1, [d])]) == pytest.approx(
        [0.6, round(0.3 * 20 / 35, 6), round(0.3 * 15 / 35, 6), 0.1]
    )
    # size 0: one share whatever the size; a fraction: sqrt(n * f)
    assert rates([(1.0, [Weighted(b, size=0), Weighted(c, size=0)])]) == [0.5, 0.5]
    assert rates([(1.0, [Weighted(b, size=0.25), c])]) == [0.5, 0.5]
    # group rates need not sum to 1 (Molmo2's SFT groups sum to 1.1): they are normalised
    assert rates([(0.55, [a]), (0.55, [b])]) == [0.5, 0.5]


def test_mixture_entries_parse_and_say_what_is_wrong():
    assert parse_mixture([[0.5, ["pixmo-cap", "images:pointing, counting"]]]) == [
        (0.5, [Entry("pixmo-cap"), Entry("images", ("pointing", "counting"))])
    ]
    assert parse_mixture([[1, [{"name": "vixmo", "size": 0, "rate": 0.4}]]])[0][1] == [Entry("vixmo", (), 0, 0.4)]
    for bad, message in [
        ([0.5, "pixmo-cap"], "expected \\[rate"),
        ([[0.5, [{"name": "x", "weigth": 2}]]], "unknown keys"),
        ([[0.5, [3]]], "a dataset name"),
        ([[-1, ["x"]]], "negative"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_mixture(bad if isinstance(bad[0], list) else [bad])


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def caption(i):
    """A text-only row (a chat turn), which needs no media file."""
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": str(i)}]
    return {"id": i, "annotations": [{"task": "chat", "messages": messages}]}


def test_datasets_are_found_by_name_as_files_or_folders(tmp_path):
    write(tmp_path / "small.jsonl", [caption(i) for i in range(4)])
    (tmp_path / "big").mkdir()
    write(tmp_path / "big" / "part-0.jsonl", [caption(i) for i in range(100)])
    write(tmp_path / "big" / "part-1.jsonl", [caption(i) for i in range(300)])
    assert set(dataset_files(tmp_path)) == {"small", "big"}
    mixture = build_mixture(tmp_path, [[0.5, ["small"]], [0.5, ["big", {"name": "small", "rate": 2}]]], seed=0)
    assert [len(d) for d in mixture.datasets] == [4, 400, 4]
    assert [d.name for d in mixture.datasets] == ["small", "big", "small"]
    assert mixture.probabilities.tolist() == pytest.approx([0.5, 0.5 * 20 / 24, 0.5 * 4 / 24])
    with pytest.raises(FileNotFoundError, match="no dataset 'pixmo-cap' in .*datasets there: big, small"):
        build_mixture(tmp_path, [[1.0, ["pixmo-cap"]]], seed=0)
    with pytest.raises(FileNotFoundError, match="no data folder"):
        build_mixture(tmp_path / "missing", [[1.0, ["small"]]], seed=0)


def test_shapesworld_names_and_kinds(shapes_folder):
    """ShapesWorld's files by name (with a task filter) give what the older kinds gave."""
    by_task = build_mixture(shapes_folder, [[0.5, ["images:caption"]], [0.5, ["videos", "text"]]], seed=0)
    by_kind = build_mixture(shapes_folder, [[0.5, ["caption"]], [0.5, ["video", "text"]]], seed=0)
    assert [len(d) for d in by_task.datasets] == [len(d) for d in by_kind.datasets]
    first = by_task.datasets[0][0]
    assert [c.style for c in first.conversations] == ["caption"] and first.images
    assert by_task.datasets[1][0].video is not None  # a video row becomes a video example


def test_optional_datasets_may_be_absent_required_ones_may_not(tmp_path, caplog, capsys):
    """Stage 2 lists academic sets a data folder may lack: optional ones are left out with a one-line notice (and a
    group left empty drops out, the other rates renormalised); a required one that is absent is a one-line user
    error, exit status 2."""
    import argparse

    from nanomolmo2.errors import run_command

    write(tmp_path / "pixmo-cap.jsonl", [caption(i) for i in range(4)])
    write(tmp_path / "tulu-3-sft-mixture.jsonl", [caption(i) for i in range(9)])
    mixture = [
        [0.5, ["pixmo-cap", {"name": "ChartQA", "optional": True}]],
        [0.25, [{"name": "DocVQA", "optional": True}]],
        [0.25, ["tulu-3-sft-mixture"]],
    ]
    with caplog.at_level("WARNING"):
        built = build_mixture(tmp_path, mixture, seed=0)
    assert [d.name for d in built.datasets] == ["pixmo-cap", "tulu-3-sft-mixture"]
    assert built.probabilities.tolist() == pytest.approx([2 / 3, 1 / 3])
    notices = [r.getMessage() for r in caplog.records if "optional dataset" in r.getMessage()]
    assert len(notices) == 2 and "ChartQA" in notices[0] and "DocVQA" in notices[1]
    assert all("\n" not in n for n in notices)
    assert parse_mixture([[1, [{"name": "x", "optional": True}]]])[0][1] == [Entry("x", optional=True)]
    with pytest.raises(ValueError, match="optional must be true or false"):
        parse_mixture([[1, [{"name": "x", "optional": "yes"}]]])

    required = [[1.0, ["pixmo-cap", {"name": "ChartQA"}]]]
    with pytest.raises(SystemExit) as stop:
        run_command("nanomolmo2 train", lambda _: build_mixture(tmp_path, required, seed=0), argparse.Namespace())
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1
    assert "no dataset 'ChartQA'" in error and "pixmo-cap, tulu-3-sft-mixture" in error
