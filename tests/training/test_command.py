"""`nanomolmo2 train`'s options: packaged configs found from any folder, and `--stage` that means something."""

import argparse

import pytest

from nanomolmo2.train import add_arguments, config_from_args
from nanomolmo2.training.config import load_config, packaged_configs


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_packaged_configs_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert packaged_configs() == ["stage1", "stage2", "stage3", "tiny_stage1", "tiny_stage2", "tiny_stage3"]
    for name in packaged_configs():
        assert load_config(name).stage == int(name[-1])
    assert load_config("tiny_stage1.toml").model.llm.hidden_size == 192


def test_a_config_file_path_still_works(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("stage = 2\nseq_len = 777\n")
    config = load_config(path)
    assert (config.stage, config.seq_len) == (2, 777)


def test_unknown_config_names_the_packaged_ones():
    with pytest.raises(FileNotFoundError, match="tiny_stage1"):
        load_config("stage9")


def test_stage_alone_uses_the_packaged_stage_config():
    config = config_from_args(parse(["--stage", "2"]))
    assert config.stage == 2 and config.seq_len == load_config("stage2").seq_len == 16384
    assert config_from_args(parse(["--stage", "3"])).seq_len == load_config("stage3").seq_len


def test_stage_and_config_must_agree():
    assert config_from_args(parse(["--stage", "1", "--config", "tiny_stage1"])).stage == 1
    with pytest.raises(SystemExit, match="stage 1"):
        config_from_args(parse(["--stage", "2", "--config", "tiny_stage1"]))


def test_no_config_and_no_stage_is_an_error():
    with pytest.raises(SystemExit, match="--config"):
        config_from_args(parse([]))
