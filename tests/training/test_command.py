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


def test_user_mistakes_end_with_one_line_and_status_2(tmp_path, capsys):
    from nanomolmo2.cli import main

    cases = [
        (["--config", "tiny_stage1", "--set", "no_such_key=1"], "unknown config key 'no_such_key'"),
        (["--config", "tiny_stage1", "--set", "max_steps=many"], "cannot read 'many' as int"),
        (["--config", "no_such_config"], "no config 'no_such_config'"),
        (["--config", "tiny_stage1", "--data", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "a")],
         "no data folder"),
    ]  # fmt: skip
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", *argv])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.startswith("nanomolmo2 train: error:"), (argv, err)
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, (argv, err)


def test_a_small_global_batch_sets_the_micro_batch(shapes_data, tmp_path):
    """--batch-size 4 on a config with micro_batch_size 16: one process takes 4 sequences a step."""
    from nanomolmo2.training.trainer import Trainer

    from .conftest import tiny_config

    trainer = Trainer(tiny_config(shapes_data, tmp_path, batch_size=4, micro_batch_size=16))
    assert (trainer.config.micro_batch_size, trainer.accumulation) == (4, 1)
    assert trainer.train_step()["step"] == 1
    trainer.close()


def test_resume_uses_the_runs_config_and_folder(shapes_data, tmp_path):
    from nanomolmo2.training.trainer import Trainer

    from .conftest import tiny_config

    run = tmp_path / "run"
    trainer = Trainer(tiny_config(shapes_data, run, seq_len=400))
    trainer.train_step()
    trainer.save()
    trainer.close()
    config = config_from_args(parse(["--resume-from", str(run), "--max-steps", "9"]))
    assert config.out_dir == str(run) and config.resume_from == str(run)  # in place
    assert (config.seq_len, config.max_steps) == (400, 9)  # the run's settings; what may change, changed
    step_folder = run / "checkpoints" / "step_1"
    assert config_from_args(parse(["--resume-from", str(step_folder)])).out_dir == str(run)
    elsewhere = config_from_args(parse(["--resume-from", str(run), "--out-dir", str(tmp_path / "b")]))
    assert elsewhere.out_dir == str(tmp_path / "b")
