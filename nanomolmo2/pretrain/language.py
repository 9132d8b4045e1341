"""Pretraining the tiny language model: next-token prediction on ShapesWorld's text world.

Molmo2 starts from a Qwen3 that has read the world in text. The tiny model's Qwen3 reads ShapesWorld in text
(shapesworld/text_world.py: every scene written as a grid of cell words, with the questions and answers the
vision-language model will train on), with the loss on the answers, in packed rows like the training stages.
The result is a Qwen3 folder (formats/hf.py writes transformers' names) that stage 1 loads as it loads Qwen3-0.6B.

    python -m nanomolmo2.pretrain.language --data data/demo/train --out runs/pretrain/qwen3-tiny --steps 2100
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.chat import user_turn
from ..data.packing import Packer
from ..data.processor import Processor
from ..eval.generation import model_inputs
from ..formats.hf import ours_to_qwen3_state, qwen3_config_dict
from ..formats.tokenizer_files import default_tokenizer_file
from ..models.config import ConnectorConfig, LanguageModelConfig, NanoMolmo2Config, VisionConfig
from ..models.language_model import LanguageModel
from ..models.nanomolmo2 import NanoMolmo2
from ..shapesworld.text_world import (
    frame_times,
    image_text,
    text_world_stream,
    text_world_vocabulary,
    video_text,
)
from ..tokens import BOS_TOKEN

log = logging.getLogger(__name__)

TINY_LLM = dict(hidden_size=192, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=48, intermediate_size=512,
                rope_theta=10_000.0, max_position_embeddings=4096)  # fmt: skip


@dataclass
class LanguagePretraining:
    data: str = "data/demo/train"
    out: str = "runs/pretrain/qwen3-tiny"
    llm: dict = field(default_factory=lambda: dict(TINY_LLM))
    mixture: list = field(
        default_factory=lambda: [
            [0.13, ["caption"]],
            [0.17, ["vqa"]],
            [0.22, ["pointing"]],
            [0.43, ["video"]],
            [0.05, ["text"]],
        ]  # fmt: skip
    )  # video's share above the stages' (0.35): the LM reads video in text later than images (docs/LOG.md)
    steps: int = 2100
    rows: int = 16
    seq_len: int = 1024
    lr: float = 2e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    image_side: int = 8  # cells per side: the tiny model's vision tokens per image side
    frame_side: int = 8
    max_frames: int = 16
    # the loss on the answers only (as the vision-language stages train), or on every token (the grids and questions
    # too): every token taught "where" better and "what" worse at stage 1 (docs/LOG.md)
    every_token: bool = False
    # points and captions moved to their cell's centre (text_world.on_grid), else the data's own: centred points
    # taught "where" in text but not through the connector, true ones did better at stage 1 (docs/LOG.md)
    centred_points: bool = False
    # up to this many newlines before each grid: a place is read from the grid, not from its distance to BOS, which
    # only an image's grid keeps (docs/LOG.md)
    grid_shift: int = 32
    seed: int = 0
    compile: bool = True


def lr_at(step: int, config: LanguagePretraining) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------------------------------
# the Qwen3 folder, and the compact form the repository keeps

ROW_IDS = "model.embed_tokens.row_ids"  # the compact form: which rows of the embedding table it holds
ROWS = "model.embed_tokens.rows"
COMPACT_WEIGHTS = "weights.safetensors"


def qwen3_state(model: LanguageModel) -> dict[str, torch.Tensor]:
    """The model's weights under Qwen3's names (tied: no lm_head)."""
    return ours_to_qwen3_state(model.state_dict(), model.config)


def compact_state(model: LanguageModel) -> dict[str, torch.Tensor]:
    """Qwen3's weights with the embedding table cut to the rows the text world uses (its output vocabulary: every
    token of the text). The other ~151,500 rows never get a gradient and stay as initialised; they are most of the
    table (117 MB at width 192), so the repository keeps the trained rows only (`expand_state` puts zeros there)."""
    state = qwen3_state(model)
    ids = torch.tensor(model.config.output_token_ids, dtype=torch.long)
    state[ROW_IDS], state[ROWS] = ids, state.pop("model.embed_tokens.weight")[ids].clone()
    return state


def compact_folder_files(model: LanguageModel, card: str) -> dict:
    """What the repository keeps of a pretrained model: Qwen3's config, the compact weights, the model card."""
    return {"config.json": qwen3_config_dict(model.config), COMPACT_WEIGHTS: compact_state(model), "README.md": card}


def expand_state(compact: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """A compact state -> a complete Qwen3 state: the kept rows in place, zeros for the tokens the text never uses."""
    state = dict(compact)
    ids, rows = state.pop(ROW_IDS), state.pop(ROWS)
    table = rows.new_zeros(vocab_size, rows.shape[1])
    table[ids] = rows
    state["model.embed_tokens.weight"] = table
    return state


def qwen3_folder_files(config: dict, state: dict[str, torch.Tensor], card: str = "") -> dict:
    """A Qwen3 folder (transformers' `Qwen3ForCausalLM` loads it): config (`qwen3_config_dict`), weights, the Qwen3
    tokenizer, model card."""
    files = {"config.json": config, "model.safetensors": state}
    tokenizer = default_tokenizer_file()
    if tokenizer.is_file():
        files["tokenizer.json"] = tokenizer.read_text(encoding="utf-8")
    return files | ({"README.md": card} if card else {})


# ---------------------------------------------------------------------------------------------------------------------
# how well it reads the text world


@torch.no_grad()
def text_world_scores(model: LanguageModel, held_out: str | Path, limit: int = 100, side: int = 8) -> dict[str, float]:
    """Molmo2's metrics (eval/evaluate.py) on the held-out split's questions, asked about its scenes written as text:
    what the language model brings to stage 1 (it cannot answer from pixels what it cannot answer from words)."""
    from ..eval.evaluate import image_queries, score, summarize, text_queries, video_queries

    processor = Processor()
    tokenizer = processor.tokenizer
    queries = image_queries(Path(held_out), limit, per_kind=1) + text_queries(Path(held_out), limit)
    queries += video_queries(Path(held_out), 16, limit, per_kind=1)
    prompts = []
    for query in queries:
        if query.kind in ("video_qa", "video_point"):
            scene = video_text(query.row, frame_times(query.row, 2.0, 16), side)
        else:
            scene = image_text(query.row, side) if query.kind != "text" else ""
        prompts.append(tokenizer.encode(BOS_TOKEN + scene) + user_turn(tokenizer, query.request.question, first=True))
    # NanoMolmo2.generate (the KV cache, left padding) over text alone: a vision-language shell around this model
    shell = NanoMolmo2(NanoMolmo2Config(llm=model.config, vision=VisionConfig.tiny(), connector=ConnectorConfig.tiny()))
    shell.llm = model.eval()
    values = {}
    order = sorted(range(len(queries)), key=lambda i: (queries[i].kind, len(prompts[i])))
    bf16 = torch.cpu._is_avx512_bf16_supported()
    for start in range(0, len(order), 64):
        chunk = order[start : start + 64]
        inputs = model_inputs([torch.tensor(prompts[i]) for i in chunk], [], "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            new = shell.generate(**inputs, max_new_tokens=queries[chunk[0]].request.max_new_tokens)
        for row, i in enumerate(chunk):
            tokens = new[row].tolist()
            tokens = tokens[: tokens.index(tokenizer.eos_id)] if tokenizer.eos_id in tokens else tokens
            for name, value in score(queries[i], tokenizer.decode(tokens).strip()).items():
                values.setdefault(name, []).append(value)
    model.train()
    return {k: v for k, v in summarize(values).items() if not k.endswith(("precision", "recall", "_stderr"))}


def pretrain(config: LanguagePretraining) -> LanguageModel:
    torch.manual_seed(config.seed)
    processor = Processor()
    stream = text_world_stream(
        config.data, config.mixture, processor, config.seed, config.image_side, config.frame_side,
        config.max_frames, config.seq_len, config.every_token, config.centred_points, config.grid_shift,
    )  # fmt: skip
    vocabulary = tuple(text_world_vocabulary(config.data, processor.tokenizer, config.image_side))
    model = LanguageModel(LanguageModelConfig(**config.llm, output_token_ids=vocabulary))
    if config.compile:
        for block in model.layers:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), eps=1e-6, fused=True)
    batches = Packer(config.rows, config.seq_len).pack(stream)
    bf16 = torch.cpu._is_avx512_bf16_supported()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "metrics.jsonl", "w")
    model.train()
    for step in range(config.steps):
        start = time.perf_counter()
        batch = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(
                batch["input_ids"], batch["labels"], position_ids=batch["position_ids"],
                segment_ids=batch["segment_ids"], annotation_ids=batch["annotation_ids"],
                loss_positions=batch["loss_positions"], return_logits=False,
            ).loss  # fmt: skip
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, "loss": loss.item(), "grad_norm": norm.item(), "lr": lr_at(step, config),
                  "seconds": time.perf_counter() - start}  # fmt: skip
        log_file.write(json.dumps(record) + "\n")
        if step % 25 == 0 or step == config.steps - 1:
            log_file.flush()
            print(f"step {step + 1}: loss {record['loss']:.4f} ({record['seconds']:.2f} s)", flush=True)
        if (step + 1) % 300 == 0:
            torch.save({"config": asdict(config), "state": model.state_dict()}, out / f"language_model_{step + 1}.pt")
    log_file.close()
    torch.save({"config": asdict(config), "state": model.state_dict()}, out / "language_model.pt")
    return model


def main(argv: list[str] | None = None) -> None:
    defaults = LanguagePretraining()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=defaults.data)
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--rows", type=int, default=defaults.rows)
    parser.add_argument("--every-token", action="store_true", help="the loss on every token, not the answers only")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--centred-points", action="store_true", help="points on their cells' centres (on_grid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    pretrain(LanguagePretraining(data=args.data, out=args.out, steps=args.steps, lr=args.lr, seq_len=args.seq_len,
                                 rows=args.rows, every_token=args.every_token, warmup=args.warmup,
                                 centred_points=args.centred_points))  # fmt: skip


if __name__ == "__main__":
    main()
