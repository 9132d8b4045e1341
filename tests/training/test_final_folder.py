"""Training keeps the tokenizer of the checkpoint it starts from, and `final/` is a complete Molmo2 folder shipping
that tokenizer (the files transformers needs to serve it are checked in tests/formats/test_molmo2_folder.py)."""

import json

from tokenizers import Tokenizer as RustTokenizer

from nanomolmo2.data.tokenizer import Tokenizer
from nanomolmo2.models import NanoMolmo2
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config

SERVING_FILES = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"}
SERVING_FILES |= {"processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json"}


def test_training_uses_and_ships_the_tokenizer_of_its_starting_checkpoint(shapes_data, tmp_path):
    start = tiny_config(shapes_data, tmp_path / "unused")
    tokenizer = RustTokenizer.from_str(Tokenizer().to_json())  # a copy: tokenizers are shared, never changed
    tokenizer.add_tokens(["<|shape|>"])  # a tokenizer only this checkpoint has: id 151946
    NanoMolmo2(start.model).save_pretrained(tmp_path / "start", tokenizer=tokenizer.to_str())

    trainer = Trainer(tiny_config(shapes_data, tmp_path / "run", max_steps=1, init_from=str(tmp_path / "start")))
    try:
        assert trainer.processor.tokenizer.token_to_id("<|shape|>") == 151946
        trainer.train()
    finally:
        trainer.close()
    final = tmp_path / "run" / "final"
    assert SERVING_FILES <= {p.name for p in final.iterdir()}
    assert Tokenizer(final).token_to_id("<|shape|>") == 151946
    assert (
        json.loads((final / "preprocessor_config.json").read_text())["size"]["height"] == start.model.vision.image_size
    )
