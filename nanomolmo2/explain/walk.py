"""Walk one image or video through the real pipeline and record what every stage made.

    input -> resize -> crops -> patches -> ViT features -> pooling windows -> connector -> sequence
          -> embeddings -> attention mask -> logits  (+ the same input packed into a training row)

Every tensor comes from the package's own code: the Processor (data/processor.py, image_preprocessing.py),
the chat layout (data/chat.py), one `NanoMolmo2.forward` whose intermediate outputs are caught with forward
hooks (so nothing runs twice and nothing is re-implemented), `build_attention_mask` with the arguments the
model gives it, and the training collator (data/packing.py). A `Stage` holds the shapes, a one-line meaning
and a few detail lines; a `Walk` also keeps what the pictures (pictures.py) draw. Longer than 400 lines because the
walk is one story from pixels to logits, told for images and videos side by side; split, a reader would
jump between files at every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import torch

from .. import tokens as T
from ..data.chat import media_prefix, prompt
from ..data.examples import Conversation, Example, TokenizedExample, tokenize_example
from ..data.image_preprocessing import ImageInputs, VideoInputs, load_image, select_tiling, to_rgb
from ..data.packing import collate
from ..data.processor import Processor, merge_vision_inputs, vision_token_mask
from ..data.video_io import load_video
from ..models.attention import build_attention_mask
from ..models.nanomolmo2 import NanoMolmo2

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}
# Token ids with a kind of their own in the token layout (BOS is told apart by its position).
SPECIAL_KINDS = {
    T.IMAGE_START_ID: "<im_start>",
    T.LOW_RES_IMAGE_START_ID: "<low_res_im_start>",
    T.IMAGE_PATCH_ID: "<im_patch>",
    T.IMAGE_COL_ID: "<im_col>",
    T.IMAGE_END_ID: "<im_end>",
    T.FRAME_START_ID: "<frame_start>",
    T.FRAME_END_ID: "<frame_end>",
}
PACKED_QUESTIONS = ("What is in the picture?", "What colours are there?", "Describe it in one sentence.")
PACKED_ANSWER = "An answer goes here."  # the packed row shows the layout only; the answers do not matter


@dataclass
class Stage:
    name: str
    shapes: dict[str, tuple[int, ...]]  # label -> tensor shape
    meaning: str
    details: list[str] = field(default_factory=list)


@dataclass
class Walk:
    source: Path
    kind: str  # "image" or "video"
    question: str
    stages: list[Stage]
    processor: Processor  # crop and patch size, overlap margins, pooling windows
    vision: ImageInputs | VideoInputs  # what the processor made of the input
    pixels: np.ndarray  # the image [H, W, 3] or the sampled frames [F, H, W, 3], uint8 RGB
    times: list[float]  # frame times in seconds (empty for an image)
    tiling: tuple[int, int] | None  # (rows, cols) of the high-res crops; None for a video or the global crop only
    canvas: tuple[int, int] | None  # (height, width) the image is resized to before it is cut
    input_ids: list[int]
    token_kinds: list[str]  # one per token of input_ids
    attention: torch.Tensor  # [L, L] bool, True = the query (row) may attend to the key (column)
    packed: dict[str, torch.Tensor]  # a collated training row of two examples: segment_ids, annotation_ids, ...
    packed_attention: torch.Tensor  # [L2, L2] bool, its mask
    top_tokens: list[tuple[str, float]]  # the 5 likeliest next tokens after the prompt, with probabilities

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def pooling(self) -> tuple[int, int]:
        """Window (rows, cols) of this input's vision tokens."""
        return self.processor.video_pooling if self.kind == "video" else self.processor.image_pooling


# ---------------------------------------------------------------- media and layout


def is_video(path: Path) -> bool:
    """By extension first; otherwise whatever PIL cannot open is handed to the video reader."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        with PIL.Image.open(path):
            return False
    except PIL.UnidentifiedImageError:
        return True


def unpatchify(pixel_values: torch.Tensor, patch_size: int) -> np.ndarray:
    """`[crops, P, p*p*3]` in [-1, 1] -> uint8 crops `[crops, S, S, 3]` (the inverse of `patchify`)."""
    n, num_patches, _ = pixel_values.shape
    side = round(num_patches**0.5)
    x = pixel_values.reshape(n, side, side, patch_size, patch_size, 3).transpose(2, 3)  # [n, rows, p, cols, p, 3]
    x = x.reshape(n, side * patch_size, side * patch_size, 3)
    return (x * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def crop_layout(processor: Processor, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(rows, cols) and canvas (height, width): preprocess_image's choice, asked of the same select_tiling."""
    left, right = processor.overlap_margins
    window = (processor.crop_size // processor.patch_size - left - right) * processor.patch_size
    margin = (left + right) * processor.patch_size
    rows, cols = select_tiling(height - margin, width - margin, window, processor.max_crops)
    return (rows, cols), (rows * window + margin, cols * window + margin)


def padding(windows: torch.Tensor, rows: int, cols: int) -> str:
    """How many -1 slots padding the patch grid up to `rows` x `cols` (whole windows) put in `windows`."""
    pads = int((windows < 0).sum())
    return f"grid padded to {rows}x{cols}: {pads} slots are -1" if pads else "no padding needed"


# ---------------------------------------------------------------- stages before the model


def patch_stage(vision: ImageInputs | VideoInputs, p: int) -> Stage:
    crops, num_patches, numbers = vision.pixel_values.shape
    side = round(num_patches**0.5)
    meaning = f"each crop cut into {side}x{side} = {num_patches} patches of {p}x{p}x3 = {numbers} numbers in [-1, 1]"
    return Stage("patches", {"pixel_values": (crops, num_patches, numbers)}, meaning)


def pooling_stage(label: str, windows: torch.Tensor, pool: tuple[int, int], details: list[str]) -> Stage:
    meaning = (
        f"one row per vision token: the flat indices (into all crops' patches) of the {pool[0]}x{pool[1]} patches "
        "it pools; -1 = padding past the edge of the patch grid"
    )
    return Stage("pooling", {label: tuple(windows.shape)}, meaning, details)


def image_stages(processor: Processor, pixels: np.ndarray, vision: ImageInputs) -> tuple[list[Stage], tuple, tuple]:
    """input, resize, crops, patches, pooling; and the tiling and canvas size (None with the global crop only)."""
    h, w = pixels.shape[:2]
    size, p, (left, right) = processor.crop_size, processor.patch_size, processor.overlap_margins
    crops_shape = unpatchify(vision.pixel_values, p).shape  # [crops, S, S, 3]: the crops the patches came from
    side, crops = size // p, crops_shape[0]
    stages = [Stage("input", {"image": (h, w, 3)}, f"the picture as RGB pixels: {w} px wide, {h} px high")]
    tiling = canvas = None
    resize = f"global crop only: the image squashed to {size}x{size}"
    if crops > 1:
        tiling, canvas = crop_layout(processor, h, w)
        if 1 + tiling[0] * tiling[1] != crops:
            raise RuntimeError(f"tiling {tiling} does not give the processor's {crops} crops")
        resize = (
            f"{w}x{h} -> a {tiling[0]} x {tiling[1]} tiling of {size}-px crops (the one needing the least scaling): "
            f"resized to a {canvas[1]}x{canvas[0]} canvas, and squashed to {size}x{size} for the global view"
        )
    shapes = {"canvas": (*canvas, 3)} if canvas else {}
    stages.append(Stage("resize", shapes | {"global": crops_shape[1:]}, resize))
    overlap = f"; neighbours overlap by {left + right} patches ({(left + right) * p} px)" if crops > 1 else ""
    whole = f"1 global crop (the whole image, low resolution) + {crops - 1} crops of the canvas{overlap}"
    stages += [Stage("crops", {"crops": crops_shape}, whole), patch_stage(vision, p)]
    low_h, low_w, high_h, high_w = vision.grid
    ph, pw = processor.image_pooling
    low, high = vision.token_pooling[: low_h * low_w], vision.token_pooling[low_h * low_w :]
    details = [
        f"low-res: {low_h}x{low_w} = {low_h * low_w} windows over the global crop's {side}x{side} patches "
        f"({padding(low, low_h * ph, low_w * pw)})"
    ]
    if high_h:
        details.append(
            f"high-res: {high_h}x{high_w} = {high_h * high_w} windows over the canvas's {canvas[0] // p}x"
            f"{canvas[1] // p} patches, each once (overlaps dropped; {padding(high, high_h * ph, high_w * pw)})"
        )
    stages.append(pooling_stage("image_token_pooling", vision.token_pooling, (ph, pw), details))
    return stages, tiling, canvas


def video_stages(processor: Processor, path: Path, vision: VideoInputs, frames: np.ndarray, max_frames: int):
    """input, crops, patches, pooling."""
    capture = cv2.VideoCapture(str(path))  # only for the frame rate and length shown to the reader
    fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    size, side = processor.crop_size, processor.crop_size // processor.patch_size
    (f, h, w, _), (_, rows, cols), (ph, pw) = frames.shape, vision.grid, processor.video_pooling
    sampled = (
        f"{count} frames at {fps:.1f} fps; {f} sampled as RGB (at most 2 a second and {max_frames} in all, "
        "the last frame included)"
    )
    times = "frame times (s): " + ", ".join(f"{t:.2f}" for t in vision.times)
    crops = unpatchify(vision.pixel_values, processor.patch_size).shape  # [frames, S, S, 3]
    pooling = (
        f"per frame {rows}x{cols} = {rows * cols} windows of {ph}x{pw} over {side}x{side} patches "
        f"({padding(vision.token_pooling, rows * ph, cols * pw)}, in all frames)"
    )
    return [
        Stage("input", {"frames": (f, h, w, 3)}, sampled, [times]),
        Stage("crops", {"crops": crops}, f"each {w}x{h} frame squashed to one {size}x{size} crop"),
        patch_stage(vision, processor.patch_size),
        pooling_stage("video_token_pooling", vision.token_pooling, (ph, pw), [pooling]),
    ]


# ---------------------------------------------------------------- the prompt through the model


def token_kinds(ids: list[int], prefix_len: int, video: bool) -> list[str]:
    """The kind of every prompt token: BOS, a vision structure token, frame-time text, chat marker or text."""
    kinds = []
    for i, token in enumerate(ids):
        if i == 0 and token == T.BOS_ID:
            kinds.append("BOS")
        elif token in SPECIAL_KINDS:
            kinds.append(SPECIAL_KINDS[token])
        elif i < prefix_len:  # text inside the media block: frame times (or "Image k" labels)
            kinds.append("frame time" if video else "image label")
        elif token in (T.IM_START_ID, T.IM_END_ID):
            kinds.append("chat marker")
        else:
            kinds.append("text")
    return kinds


def runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, last) index of every run of consecutive True values."""
    steps = torch.diff(torch.tensor([False, *flags, False]).int())  # +1 where a run starts, -1 after it ends
    return list(zip((steps == 1).nonzero()[:, 0].tolist(), ((steps == -1).nonzero()[:, 0] - 1).tolist(), strict=True))


def sequence_details(kinds: list[str], prefix_len: int, vision: ImageInputs | VideoInputs) -> list[str]:
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    lines = [
        f"{len(kinds)} tokens = {prefix_len} of media (BOS first) + {len(kinds) - prefix_len} of the user turn",
        "counts: " + ", ".join(f"{k} {n}" for k, n in counts.items()),
    ]
    slots = runs([k == "<im_patch>" for k in kinds])
    if isinstance(vision, VideoInputs):
        return lines + [
            f"frame at {t:.1f} s: its time as text, <frame_start>, <im_patch> slots {a}..{b}, <frame_end>"
            for t, (a, b) in zip(vision.times, slots, strict=True)
        ]
    (a, b), rest = slots[0], slots[1:]
    lines.append(f"<im_patch> slots {a}..{b}: the {b - a + 1} low-res tokens, row after row")
    if rest:
        (a, _), (_, b), width = rest[0], rest[-1], rest[0][1] - rest[0][0] + 1
        lines.append(f"<im_patch> slots {a}..{b}: {len(rest)} high-res rows of {width}, each closed by <im_col>")
    return lines


def run_model(model: NanoMolmo2, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One `model(**inputs)`, with forward hooks keeping the outputs of the feature blocks, the ViT, the
    pooling, the connector, and the embeddings handed to the LLM; plus the logits."""
    layers = model.config.vision.resolved_feature_layers
    watched = {f"block_{i}": model.vision.blocks[i] for i in layers}
    watched |= {"features": model.vision, "pooled": model.connector.pool, "vision_tokens": model.connector}
    caught: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _args, out, name=name: caught.__setitem__(name, out.detach()))
        for name, module in watched.items()
        if module is not None  # the "linear" / "mlp" connectors have no pooling attention
    ]
    grab = lambda _m, _args, kwargs: caught.__setitem__("inputs_embeds", kwargs["inputs_embeds"].detach())
    handles.append(model.llm.register_forward_pre_hook(grab, with_kwargs=True))
    try:
        with torch.no_grad():
            caught["logits"] = model(**inputs).logits  # [1, L, vocab]
    finally:
        for handle in handles:
            handle.remove()
    return caught


def model_stages(model: NanoMolmo2, processor: Processor, vision: ImageInputs | VideoInputs, question: str):
    """The prompt through the model: (ViT stage, later stages, token ids, token kinds, mask [L, L], top tokens)."""
    video = isinstance(vision, VideoInputs)
    ids = prompt(processor, [vision], question)
    prefix_len = len(media_prefix(processor, [vision]))
    input_ids = torch.tensor([ids])  # [1, L]
    inputs = {"input_ids": input_ids, "mm_token_type_ids": vision_token_mask(input_ids)}
    keys = ("pixel_values_videos", "video_token_pooling") if video else ("pixel_values", "image_token_pooling")
    inputs |= dict(zip(keys, merge_vision_inputs([vision]), strict=True))
    out = run_model(model, inputs)
    shape = {name: tuple(tensor.shape) for name, tensor in out.items()}
    # The mask the language model builds from these inputs (LanguageModel.hidden_states makes the same call).
    vision_mask = inputs["mm_token_type_ids"] > 0
    mask = build_attention_mask(len(ids), len(ids), vision_mask=vision_mask)  # [1, 1, L, L]
    causal, allowed = len(ids) * (len(ids) + 1) // 2, int(mask.sum())
    kinds = token_kinds(ids, prefix_len, video)
    top = out["logits"][0, -1].float().softmax(-1).topk(5)
    top_tokens = [
        (processor.tokenizer.decode([int(i)]), float(p)) for i, p in zip(top.indices, top.values, strict=True)
    ]
    cfg, num_tokens, layers = model.config, shape["vision_tokens"][0], model.config.vision.resolved_feature_layers
    vit = Stage(
        "vit",
        {**{f"block_{i}": shape[f"block_{i}"] for i in layers}, "features": shape["features"]},
        f"the ViT reads every crop on its own ({len(model.vision.blocks)} of {cfg.vision.num_layers} blocks built); "
        f"the outputs of blocks {' and '.join(map(str, layers))} are concatenated on channels",
    )
    connector = (
        "each window -> one token: attention whose query is the mean of the window's valid patches, then a "
        f"SwiGLU MLP to the LLM's width {cfg.llm.hidden_size}"
    )
    sequence = (
        f"the prompt (data/chat.py): BOS, the vision block, then the user turn; the {num_tokens} <im_patch> slots "
        "are where the vision tokens go"
    )
    embeddings = (
        f"NanoMolmo2.embed: token embeddings, with the {num_tokens} vision tokens ADDED at the <im_patch> slots"
    )
    pairs = (
        f"{allowed} of {len(ids) ** 2} pairs allowed: {causal} causal (a token sees itself and earlier ones) + "
        f"{allowed - causal} where a vision token sees a later one ({int(vision_mask.sum())} vision tokens)"
    )
    stages = [
        Stage("connector", {k: shape[k] for k in ("pooled", "vision_tokens") if k in shape}, connector),
        Stage("sequence", {"input_ids": tuple(input_ids.shape)}, sequence, sequence_details(kinds, prefix_len, vision)),
        Stage("embeddings", {"inputs_embeds": shape["inputs_embeds"]}, embeddings),
        Stage(
            "mask",
            {"attention_mask": tuple(mask.shape)},
            "True = the query (row) may attend to the key (column): causal, but all vision tokens see each other",
            [pairs],
        ),
        Stage(
            "logits",
            {"logits": shape["logits"]},
            "a score for every vocabulary token at every position; the last row guesses the answer's first token",
            ["next token: " + ", ".join(f"{text!r} {100 * p:.3g}%" for text, p in top_tokens)],
        ),
    ]
    return vit, stages, ids, kinds, mask[0, 0], top_tokens


# ---------------------------------------------------------------- packing (training)


@dataclass
class LoadedVideo:
    """An already decoded clip, in the shape Example.video expects (anything with `.load()`)."""

    frames: np.ndarray
    times: list[float]

    def load(self) -> tuple[np.ndarray, list[float]]:
        return self.frames, self.times


def packed_row(processor: Processor, media: PIL.Image.Image | LoadedVideo) -> tuple[dict, torch.Tensor, Stage]:
    """A training row of two examples about this input (two questions, then one), collated as the trainer
    does, and its mask built with the arguments NanoMolmo2.forward passes for a training batch."""

    def example(questions: tuple[str, ...]) -> TokenizedExample:
        conversations = [Conversation([(q, PACKED_ANSWER)]) for q in questions]
        media_kwargs = {"video": media} if isinstance(media, LoadedVideo) else {"images": [media]}
        return tokenize_example(Example(conversations, **media_kwargs), processor)

    row = collate([[example(PACKED_QUESTIONS[:2]), example(PACKED_QUESTIONS[2:])]])
    length = row["input_ids"].shape[1]
    mask = build_attention_mask(  # [1, 1, L2, L2]
        length,
        length,
        attention_mask=row["attention_mask"],
        segment_ids=row["segment_ids"],
        annotation_ids=row["annotation_ids"],
        vision_mask=row["mm_token_type_ids"] > 0,
    )
    sizes = [int((row["segment_ids"][0] == s).sum()) for s in (0, 1)]
    stage = Stage(
        "packing",
        {"packed_input_ids": tuple(row["input_ids"].shape), "packed_mask": tuple(mask.shape)},
        "training packs whole examples into one row: segment_ids keep examples apart, annotation_ids let an "
        "example's questions share its media but not see each other",
        [f"example 1: {sizes[0]} tokens (2 questions), example 2: {sizes[1]} tokens (1 question)"],
    )
    return row, mask[0, 0], stage


# ---------------------------------------------------------------- the walk


def walk(
    model: NanoMolmo2, processor: Processor, path: str | Path, question: str | None = None, max_frames: int = 8
) -> Walk:
    """Run one image or video file through every stage; see the module docstring."""
    path = Path(path)
    if is_video(path):
        kind, question = "video", question or "Describe this video."
        pixels, times = load_video(path, max_frames=max_frames)  # [F, H, W, 3], seconds
        vision = processor.preprocess_video(pixels, times)
        stages, tiling, canvas = video_stages(processor, path, vision, pixels, max_frames), None, None
        media = LoadedVideo(pixels, times)
    else:
        kind, question = "image", question or "Describe this image."
        media = load_image(path)
        pixels, times = to_rgb(media), []
        vision = processor.preprocess(media)
        stages, tiling, canvas = image_stages(processor, pixels, vision)
    vit, later, ids, kinds, attention, top_tokens = model_stages(model, processor, vision, question)
    row, packed_attention, packing = packed_row(processor, media)
    stages = stages[:-1] + [vit] + stages[-1:] + later + [packing]  # stages[-1], the pooling, runs after the ViT
    return Walk(
        source=path, kind=kind, question=question, stages=stages, processor=processor, vision=vision,
        pixels=pixels, times=times, tiling=tiling, canvas=canvas, input_ids=ids, token_kinds=kinds,
        attention=attention, packed=row, packed_attention=packed_attention, top_tokens=top_tokens,
    )  # fmt: skip
