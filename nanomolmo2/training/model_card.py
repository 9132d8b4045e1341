"""The model card: `final/README.md`, written next to the weights, ready for `hf upload USER/NAME final/`.

Hugging Face model-card YAML front matter (license, library, pipeline tag, tags, base model when it is a Hub id),
then the model's configuration and size, the training recipe with the data mixture and the steps it saw, its
evaluation numbers when known (the last validation loss of the run; `nanomolmo2 eval` adds Molmo2's metrics
later, between the evaluation markers), and how to load it in nanoMolmo2 and in transformers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..data.data_root import Entry, parse_mixture
from ..models.config import NanoMolmo2Config
from .config import TrainConfig

EVALUATION_START, EVALUATION_END = "<!-- evaluation -->", "<!-- /evaluation -->"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def last_value(metrics_file: Path, key: str) -> float | None:
    """The last `key` logged in a run's metrics.jsonl, or None."""
    found = None
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            try:
                value = json.loads(line).get(key)
            except (json.JSONDecodeError, AttributeError):
                continue
            found = value if isinstance(value, int | float) else found
    return found


def front_matter(config: TrainConfig) -> str:
    base = [p for p in (config.init_from, config.molmo2_path, config.qwen3_path) if p and HUB_ID.match(p)]
    lines = ["---", "license: apache-2.0", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags:"]
    lines += [f"- {tag}" for tag in ("nanomolmo2", "molmo2", "vision-language", "pointing")]
    if base:
        lines += ["base_model:"] + [f"- {b}" for b in base]
    return "\n".join(lines + ["---"])


def architecture(model: NanoMolmo2Config, parameters: dict[str, int]) -> str:
    llm, vision, connector = model.llm, model.vision, model.connector
    head = f"{len(llm.output_token_ids):,} tokens (a restricted output vocabulary)" if llm.output_token_ids else ""
    head = head or f"{llm.vocab_size:,} tokens"
    tied = "embeddings tied to the head (the Molmo2-format files hold a copy as lm_head)"
    language = (
        f"Qwen3: hidden {llm.hidden_size}, {llm.num_layers} layers, {llm.num_heads} query / {llm.num_kv_heads} "
        f"key-value heads of {llm.head_dim}, FFN {llm.intermediate_size}, head over {head}"
        f", {tied if llm.tie_word_embeddings else 'untied head'}"
    )
    encoder = (
        f"ViT on {vision.image_size}-px crops of {vision.patch_size}-px patches (a global crop and up to "
        f"{vision.max_crops} more): hidden {vision.hidden_size}, {vision.num_built_layers} blocks, features of "
        f"blocks {list(vision.resolved_feature_layers)}"
    )
    pooling = "x".join(map(str, connector.image_pooling)), "x".join(map(str, connector.video_pooling))
    bridge = f"{connector.kind} pooling of {pooling[0]} windows ({pooling[1]} for video frames), projector "
    bridge += f"{connector.projector_hidden_size} wide"
    rows = [("language model", language), ("vision encoder", encoder), ("connector", bridge)]
    rows += [(f"parameters: {name}", f"{count:,}") for name, count in parameters.items()]
    return "| part | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def entry_text(entry: Entry) -> str:
    """A mixture entry as the card shows it: `pixmo-cap (as 100,000 rows)`, `ChartQA (optional)`."""
    text = entry.name + (":" + ",".join(entry.tasks) if entry.tasks else "")
    if entry.size is not None:
        text += f" (as {entry.size:,g} rows)"
    if entry.rate != 1.0:
        text += f" x{entry.rate:g}"
    return text + (" (optional)" if entry.optional else "")


def training(config: TrainConfig, steps: int, data: dict) -> str:
    lrs = ", ".join(f"{name} {getattr(config, f'lr_{name}'):g}" for name in ("llm", "connector", "vision"))
    frozen = [name for name in ("vision", "connector", "llm") if getattr(config, f"freeze_{name}")]
    lines = [
        f"- stage {config.stage}, **{steps:,} steps** of {config.batch_size} packed sequences of {config.seq_len} "
        f"tokens ({steps * config.batch_size:,} sequences)",
        f"- started from: {config.init_from or (config.molmo2_path and 'Molmo2 ViT + Qwen3') or 'random weights'}",
        f"- AdamW, peak learning rates {lrs}, cosine to {config.min_lr_ratio:g} of the peak; z-loss {config.z_loss:g}; "
        f"frozen: {', '.join(frozen) or 'nothing'}; dtype {config.dtype}",
        f"- data: `{data.get('folder', config.data)}`",
        "",
        "| rate | datasets |",
        "|---|---|",
    ]
    lines += [
        f"| {rate:g} | {', '.join(map(entry_text, entries))} |" for rate, entries in parse_mixture(config.mixture)
    ]
    if data.get("datasets"):
        sizes = ", ".join(f"{kind.split(':')[0]} {rows:,}" for kind, rows in data["datasets"].items())
        lines += ["", f"Dataset sizes (rows): {sizes}"]
    if data.get("info"):
        lines += ["", "Data folder info: `" + json.dumps(data["info"], sort_keys=True) + "`"]
    return "\n".join(lines)


def evaluation(metrics: dict[str, float], source: str) -> str:
    if not metrics:
        hint = "Not evaluated yet (`nanomolmo2 eval --checkpoint THIS_FOLDER --data HELD_OUT` adds the numbers here)."
        return f"{EVALUATION_START}\n{hint}\n{EVALUATION_END}"
    table = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
    return f"{EVALUATION_START}\n{source}\n\n| metric | value |\n|---|---|\n{table}\n{EVALUATION_END}"


def usage() -> str:
    return """```python
from nanomolmo2.data.processor import Processor
from nanomolmo2.data.tokenizer import Tokenizer
from nanomolmo2.eval.generation import Request, generate_answers
from nanomolmo2.models import NanoMolmo2

model = NanoMolmo2.from_pretrained("THIS_FOLDER").eval()
processor = Processor.for_model(model.config, Tokenizer("THIS_FOLDER"))  # this encoder's crops, this tokenizer
print(generate_answers(model, processor, [Request("Describe this image.", ["photo.jpg"])])[0])
```

In the terminal: `nanomolmo2 chat --checkpoint THIS_FOLDER --image photo.jpg`; on a web page:
`nanomolmo2 serve --checkpoint THIS_FOLDER`.

In transformers, which reads this Molmo2-format folder unchanged (weights, tokenizer, chat template, processor):

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

processor = AutoProcessor.from_pretrained("THIS_FOLDER")
model = AutoModelForImageTextToText.from_pretrained("THIS_FOLDER")
question = [{"type": "image", "path": "photo.jpg"}, {"type": "text", "text": "Describe this image."}]
inputs = processor.apply_chat_template(
    [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True, return_dict=True,
    return_tensors="pt",
)
answer = model.generate(**inputs, max_new_tokens=200, do_sample=False)[0, inputs["input_ids"].shape[1] :]
print(processor.decode(answer, skip_special_tokens=True))
```

A restricted output vocabulary is nanoMolmo2's only (transformers scores every token), and so is a model that sees
the global crop alone (max_crops 0): transformers' image processor always adds overlapping crops.

THIS_FOLDER is the folder of this card. `hf upload USER/NAME THIS_FOLDER` publishes it; then the nanoMolmo2 commands
take `--checkpoint USER/NAME` too (downloaded once into the Hugging Face cache)."""


def model_card(
    config: TrainConfig, parameters: dict[str, int], steps: int, data: dict, metrics: dict[str, float], name: str
) -> str:
    """The card's text (see the module docstring)."""
    source = f"The last validation loss of the training run (held-out data: `{config.val_data}`)."
    return (
        "\n\n".join(
            [
                front_matter(config),
                f"# {name}\n\nA vision-language model with Molmo2's architecture, trained with nanoMolmo2 (a small, "
                "pure-PyTorch re-implementation of Molmo2 and its recipe).",
                "## Model\n\n" + architecture(config.model, parameters),
                "## Training\n\n" + training(config, steps, data),
                "## Evaluation\n\n" + evaluation(metrics, source),
                "## Use\n\n" + usage(),
            ]
        )
        + "\n"
    )


def parameter_counts(state: dict) -> dict[str, int]:
    """Parameters per component of a state dict (`vision.`, `connector.`, `llm.` keys) and in all."""
    counts: dict[str, int] = {}
    for key, value in state.items():
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + value.numel()
    return {**counts, "total": sum(counts.values())}


def write_model_card(folder: Path, config: TrainConfig, parameters: dict[str, int], steps: int, data: dict) -> Path:
    """`folder/README.md` for the run's final model; the evaluation is its last validation loss, when it had one."""
    val_loss = last_value(Path(config.out_dir) / "metrics.jsonl", "val_loss")
    metrics = {} if val_loss is None else {"val_loss": val_loss}
    name = f"{Path(config.out_dir).name}-stage{config.stage}"
    path = Path(folder) / "README.md"
    path.write_text(model_card(config, parameters, steps, data, metrics, name))
    return path


def add_evaluation(folder: Path, metrics: dict[str, float], source: str) -> bool:
    """Add evaluation numbers to the card in `folder` (after those it has); False when there is no card there."""
    path = Path(folder) / "README.md"
    text = path.read_text() if path.is_file() else ""
    if EVALUATION_START not in text or EVALUATION_END not in text:
        return False
    start, end = text.index(EVALUATION_START), text.index(EVALUATION_END)
    kept = text[start + len(EVALUATION_START) : end].strip()
    kept = "" if kept.startswith("Not evaluated yet") else kept + "\n\n"
    new = evaluation(metrics, source).removeprefix(EVALUATION_START + "\n")
    path.write_text(text[:start] + EVALUATION_START + "\n" + kept + new + text[end + len(EVALUATION_END) :])
    return True
