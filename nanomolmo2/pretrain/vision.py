"""Pretraining the tiny vision encoder: SigLIP's sigmoid image-text loss, plus SigLIP 2's dense grounding.

Molmo2's encoder is SigLIP 2: a ViT trained to tell which caption goes with which image (a sigmoid loss on every
image-caption pair of a batch), with location-aware objectives added (SigLIP 2's LocCa decoder predicts what is
where). The tiny encoder is made the same way on ShapesWorld: images and 2-fps video frames paired with their
captions (colours, shapes, places, counts), a small text tower, and a per-patch head that names the object whose
centre lies in each patch (the grounding objective). Then it is frozen for stages 1-3, as Molmo2 freezes its own.

    python -m nanomolmo2.pretrain.vision --data data/demo/train --out runs/pretrain/siglip-tiny --steps 1500
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.image_preprocessing import load_image, preprocess_image
from ..data.jsonl import jsonl_files, read_jsonl
from ..data.video_io import decode_video
from ..formats.hf import ours_to_hf_vision_state, siglip_vision_config_dict
from ..formats.weights import write_folder_atomically
from ..models.config import VisionConfig
from ..models.vision_encoder import ACTIVATIONS, VisionBlock, VisionEncoder
from ..shapesworld.motion import colour_at, track
from ..shapesworld.scene import LEVELS
from ..shapesworld.tasks import caption, position_word

TINY_VISION = dict(image_size=112, patch_size=14, hidden_size=192, num_layers=2, num_heads=4, intermediate_size=512,
                   feature_layers=(-1,), max_crops=0)  # fmt: skip
PAD, UNKNOWN = "<pad>", "<unk>"


@dataclass
class VisionPretraining:
    data: str = "data/demo/train"
    out: str = "runs/pretrain/siglip-tiny"
    vision: dict = field(default_factory=lambda: dict(TINY_VISION))
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_len: int = 48  # words per caption, padded: SigLIP pools the last position of a fixed-length text
    steps: int = 1500
    batch: int = 256
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 1e-4
    grounding_weight: float = 1.0  # the per-patch objective (0: SigLIP's sigmoid loss alone)
    max_frames: int = 16
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------------------
# the two towers


class TextEncoder(nn.Module):
    """SigLIP's text tower, small: word + position embeddings, pre-norm blocks, a final norm, and a head on the last
    position (SigLIP pools the last position of a fixed-length text)."""

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, length: int, out_dim: int) -> None:
        super().__init__()
        config = VisionConfig(hidden_size=width, num_heads=heads, intermediate_size=4 * width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(length, width) * 0.02)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.head = nn.Linear(width, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """`[B, length]` word ids -> `[B, out_dim]`."""
        x = self.token_embedding(ids) + self.position_embedding
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x)[:, -1])


class AttentionPoolingHead(nn.Module):
    """SigLIP's MAP head: one learned query attends over the patches, then a residual MLP."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.probe = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.attention = nn.MultiheadAttention(d, config.num_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        width = config.intermediate_size
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(d, width), "fc2": nn.Linear(width, d)})
        self.act = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.attention(self.probe.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        return (pooled + self.mlp.fc2(self.act(self.mlp.fc1(self.layernorm(pooled)))))[:, 0]


class SigLIP(nn.Module):
    """Image tower (the encoder nanoMolmo2 keeps) + post-norm + MAP head, text tower, and the logit scale / bias;
    `grounding` is the per-patch head of the dense objective (used in pretraining only)."""

    def __init__(self, vision: VisionConfig, vocab_size: int, config: VisionPretraining, kinds: int) -> None:
        super().__init__()
        self.vision = VisionEncoder(vision)
        self.post_layernorm = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)
        self.head = AttentionPoolingHead(vision)
        self.text = TextEncoder(vocab_size, config.text_width, config.text_layers, config.text_heads,
                                config.text_len, vision.hidden_size)  # fmt: skip
        self.logit_scale = nn.Parameter(torch.tensor([math.log(10.0)]))  # SigLIP's initial temperature and bias
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))
        self.grounding = nn.Linear(self.vision.feature_dim, kinds)

    def image_embeddings(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised image embeddings `[B, D]`, the features nanoMolmo2 reads `[B, P, C]`)."""
        features = self.vision(patches)
        last = self.vision.hidden_states(patches)[-1] if self.vision.feature_dim != features.shape[-1] else features
        return F.normalize(self.head(self.post_layernorm(last)), dim=-1), features

    def forward(self, patches: torch.Tensor, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits `[B images, B texts]`, per-patch grounding logits `[B, P, kinds]`)."""
        images, features = self.image_embeddings(patches)
        texts = F.normalize(self.text(words), dim=-1)
        logits = images @ texts.t() * self.logit_scale.exp() + self.logit_bias
        return logits, self.grounding(features)


def siglip_folder_files(model: SigLIP, vocabulary: dict[str, int], card: str = "") -> dict:
    """The files of a SigLIP folder (transformers' `SiglipModel` loads it): config.json with both towers, the
    weights under SigLIP's names, the text tower's word list, and a model card. The grounding head is left out."""
    vision, text = model.vision.config, model.text
    width, length = text.token_embedding.weight.shape[1], text.position_embedding.shape[0]
    prefixed = lambda prefix, state: {f"{prefix}{k}": v for k, v in state.items()}  # noqa: E731
    state = prefixed("vision_model.", ours_to_hf_vision_state(model.vision.state_dict(), vision))
    state |= prefixed("vision_model.post_layernorm.", model.post_layernorm.state_dict())
    state |= prefixed("vision_model.head.", model.head.state_dict())
    blocks = {f"blocks.{k}": v for k, v in text.blocks.state_dict().items()}
    state |= prefixed("text_model.", ours_to_hf_vision_state(blocks, vision))
    state["text_model.embeddings.token_embedding.weight"] = text.token_embedding.weight
    state["text_model.embeddings.position_embedding.weight"] = text.position_embedding
    state |= prefixed("text_model.final_layer_norm.", text.final_norm.state_dict())
    state |= prefixed("text_model.head.", text.head.state_dict())
    state["logit_scale"], state["logit_bias"] = model.logit_scale, model.logit_bias
    config = {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "vision_config": siglip_vision_config_dict(vision),
        "text_config": {
            "model_type": "siglip_text_model",
            "vocab_size": text.token_embedding.weight.shape[0],
            "hidden_size": width,
            "intermediate_size": text.blocks[0].fc1.out_features,
            "num_hidden_layers": len(text.blocks),
            "num_attention_heads": text.blocks[0].num_heads,
            "max_position_embeddings": length,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": text.final_norm.eps,
            "projection_size": vision.hidden_size,
            "pad_token_id": vocabulary[PAD],
            "bos_token_id": vocabulary[PAD],
            "eos_token_id": vocabulary[PAD],
        },
    }
    files = {"config.json": config, "text_vocabulary.json": vocabulary, "model.safetensors": state}
    return files | ({"README.md": card} if card else {})


def sigmoid_loss(logits: torch.Tensor) -> torch.Tensor:
    """SigLIP: every pair is a binary question, "do they belong together?" (the diagonal: yes)."""
    labels = 2 * torch.eye(logits.shape[0], device=logits.device) - 1
    return -F.logsigmoid(labels * logits).sum(-1).mean()


# ---------------------------------------------------------------------------------------------------------------------
# the data: images and frames, their captions and the kind of object centred in each patch


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+|[.,]", text.lower())


def kinds_of(level: str) -> list[str]:
    """Grounding classes: "none" and every colour-shape pair of the level."""
    lv = LEVELS[level]
    return ["none"] + [f"{c} {s}" for c in lv.colours for s in lv.shapes]


def centre_labels(objects: list[tuple[str, str, float, float]], size: int, side: int, kinds: list[str]) -> np.ndarray:
    """`[side * side]` grounding class of every patch: the object whose centre lies in it, or 0."""
    labels = np.zeros(side * side, dtype=np.int64)
    for colour, shape, x, y in objects:
        labels[min(int(y * side / size), side - 1) * side + min(int(x * side / size), side - 1)] = kinds.index(
            f"{colour} {shape}"
        )
    return labels


def frame_caption(objects: list[tuple[str, str, float, float]], size: int) -> str:
    if not objects:
        return "Nothing."
    return caption([{"colour": c, "shape": s, "position": position_word(x, y, size, size)} for c, s, x, y in objects])


def load_pairs(folder: str | Path, vision: VisionConfig, level: str, max_frames: int):
    """(patches `[N, P, 588]` uint8, captions, grounding labels `[N, P]`) of every image and 2-fps video frame."""
    side, kinds = vision.patches_per_side, kinds_of(level)
    patches, captions, labels = [], [], []

    def add(picture, objects, size):
        inputs = preprocess_image(picture, vision.image_size, vision.patch_size, max_crops=0, pooling=(1, 1),
                                  normalize=False)  # fmt: skip
        patches.append(inputs.pixel_values[0])
        captions.append(frame_caption(objects, size))
        labels.append(centre_labels(objects, size, side, kinds))

    for file in jsonl_files(folder):
        for row in read_jsonl(file)[0]:
            data = row.data
            if "image" in data:
                objects = [(o["colour"], o["shape"], *o["center"]) for o in data["objects"]]
                add(load_image(row.media("image")[0]), objects, data["width"])
            elif "video" in data:
                frames, times, _ = decode_video(row.media("video")[0], 2.0, max_frames)
                for frame, t in zip(frames, times, strict=True):
                    objects = []
                    for o in data["objects"]:
                        centers, visible = track(o, [t])
                        if visible[0]:
                            objects.append((colour_at(o, t), o["shape"], *centers[0]))
                    add(frame, objects, data["width"])
    return torch.stack(patches), captions, torch.from_numpy(np.stack(labels))


def encode_captions(captions: list[str], vocabulary: dict[str, int], length: int) -> torch.Tensor:
    ids = torch.full((len(captions), length), vocabulary[PAD])
    for i, text in enumerate(captions):
        words = [vocabulary.get(w, vocabulary[UNKNOWN]) for w in words_of(text)][:length]
        ids[i, : len(words)] = torch.tensor(words, dtype=torch.long)
    return ids


# ---------------------------------------------------------------------------------------------------------------------
# training


@torch.no_grad()
def evaluate(model: SigLIP, patches, words, labels, batch: int = 256) -> dict[str, float]:
    """Image -> text top-1 within batches of `batch`, and per-patch grounding accuracy on patches with a centre and
    on the others."""
    model.eval()
    batch = min(batch, len(patches))
    top1, hit, objects, empty, empty_right = [], 0, 0, 0, 0
    for start in range(0, len(patches) - batch + 1, batch):
        logits, grounding = model(patches[start : start + batch], words[start : start + batch])
        top1.append(float((logits.argmax(1) == torch.arange(batch)).float().mean()))
        predicted, truth = grounding.argmax(-1), labels[start : start + batch]
        hit += int(((predicted == truth) & (truth > 0)).sum())
        objects += int((truth > 0).sum())
        empty_right += int(((predicted == 0) & (truth == 0)).sum())
        empty += int((truth == 0).sum())
    model.train()
    return {"image_to_text_top1": float(np.mean(top1)), "grounding_objects": hit / max(objects, 1),
            "grounding_empty": empty_right / max(empty, 1)}  # fmt: skip


def pretrain(config: VisionPretraining, held_out: str | None = None) -> tuple[SigLIP, dict[str, int], dict[str, float]]:
    """Train from scratch; return the model, the text tower's words and the held-out scores (empty without one)."""
    torch.manual_seed(config.seed)
    vision = VisionConfig(**config.vision)
    level = "easy"
    patches, captions, labels = load_pairs(config.data, vision, level, config.max_frames)
    vocabulary = {w: i for i, w in enumerate([PAD, UNKNOWN] + sorted({w for c in captions for w in words_of(c)}))}
    words = encode_captions(captions, vocabulary, config.text_len)
    print(f"{len(patches)} images and frames, {len(vocabulary)} words", flush=True)
    model = SigLIP(vision, len(vocabulary), config, len(kinds_of(level)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    bf16 = torch.cpu._is_avx512_bf16_supported()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(config.seed)
    order, cursor = torch.randperm(len(patches), generator=generator), 0
    log = open(out / "metrics.jsonl", "w")
    for step in range(config.steps):
        start = time.perf_counter()
        if cursor + config.batch > len(order):
            order, cursor = torch.randperm(len(patches), generator=generator), 0
        chosen = order[cursor : cursor + config.batch]
        cursor += config.batch
        warm = min(1.0, (step + 1) / config.warmup)
        progress = max(0.0, (step - config.warmup) / max(1, config.steps - config.warmup))
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, grounding = model(patches[chosen], words[chosen])
            contrastive = sigmoid_loss(logits.float())
            dense = F.cross_entropy(grounding.float().flatten(0, 1), labels[chosen].flatten())
        loss = contrastive + config.grounding_weight * dense
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, "sigmoid_loss": contrastive.item(), "grounding_loss": dense.item(),
                  "seconds": time.perf_counter() - start}  # fmt: skip
        log.write(json.dumps(record) + "\n")
        if step % 50 == 0 or step == config.steps - 1:
            log.flush()
            print(f"step {step + 1}: sigmoid {record['sigmoid_loss']:.3f} grounding {record['grounding_loss']:.3f} "
                  f"({record['seconds']:.2f} s)", flush=True)  # fmt: skip
    scores = {}
    if held_out:
        h_patches, h_captions, h_labels = load_pairs(held_out, vision, level, config.max_frames)
        scores = evaluate(model, h_patches, encode_captions(h_captions, vocabulary, config.text_len), h_labels)
        print("held-out", scores, flush=True)
        log.write(json.dumps({"held_out": scores}) + "\n")
    log.close()
    return model, vocabulary, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/demo/train")
    parser.add_argument("--held-out", default="data/demo/eval")
    parser.add_argument("--out", default="runs/pretrain/siglip-tiny")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--grounding-weight", type=float, default=1.0)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)
    vision = dict(TINY_VISION, num_layers=args.layers)
    config = VisionPretraining(data=args.data, out=args.out, steps=args.steps, grounding_weight=args.grounding_weight,
                               vision=vision)  # fmt: skip
    model, vocabulary, _ = pretrain(config, args.held_out)
    write_folder_atomically(Path(config.out) / "siglip", siglip_folder_files(model, vocabulary))


if __name__ == "__main__":
    main()
