"""NanoMolmo2: vision encoder + connector + Qwen3, glued the way Molmo2 does it.

    crops [N, 729, 588] -> ViT -> features of blocks 24 & 18 [N, 729, 2304]
      -> connector (attention-pool 2x2 windows, SwiGLU) -> vision tokens [T, 1024]
      -> ADDED to the embeddings of the T `<im_patch>` tokens of the prompt
      -> Qwen3 (causal, vision tokens attend to each other both ways) -> next-token logits

`forward` takes the keyword names transformers' `Molmo2Processor` returns (plus `labels`), so a processor
batch can be passed as `model(**batch)`. Other keys a processor may add (`image_num_crops`, ...) are
accepted and not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..formats.hub import read_checkpoint
from ..formats.molmo2 import molmo2_config, molmo2_keys, molmo2_state_to_ours, ours_to_molmo2_state
from ..formats.molmo2_folder import molmo2_folder_files
from ..formats.weights import load_state_strict, subtree, write_folder_atomically
from .attention import KVCache
from .config import NanoMolmo2Config
from .connector import Connector
from .language_model import LanguageModel, ModelOutput
from .vision_encoder import VisionEncoder


class NanoMolmo2(nn.Module):
    def __init__(self, config: NanoMolmo2Config) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionEncoder(config.vision)
        self.connector = Connector(config.connector, self.vision.feature_dim, config.llm.hidden_size)
        self.llm = LanguageModel(config.llm)

    # ------------------------------------------------------------ vision -> embeddings

    def vision_tokens(self, pixel_values: torch.Tensor, token_pooling: torch.Tensor) -> torch.Tensor:
        """Patchified crops `[crops, P, 588]` (or `[images, crops, P, 588]`) -> vision tokens `[T, D_llm]`."""
        crops = pixel_values.reshape(-1, *pixel_values.shape[-2:])
        features = self.vision(crops)
        if self.config.vision.use_cls_token:
            features = features[:, 1:]  # the pooling indices address patches only
        return self.connector(features, token_pooling)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_token_pooling: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_token_pooling: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings `[B, L, D]` with vision tokens added at the `<im_patch>` positions, in order
        (all image tokens of the batch, then all video tokens)."""
        embeds = self.llm.embed_tokens(input_ids)
        parts = []
        if pixel_values is not None:
            parts.append(self.vision_tokens(pixel_values, image_token_pooling))
        if pixel_values_videos is not None:
            parts.append(self.vision_tokens(pixel_values_videos, video_token_pooling))
        if not parts:
            return embeds
        features = torch.cat(parts).to(embeds.dtype)
        is_patch = input_ids == self.config.image_patch_id
        # Checked where it is free: on a GPU, counting would wait for the device (training data is built consistent).
        if not is_patch.is_cuda and (num_slots := int(is_patch.sum())) != features.shape[0]:
            raise ValueError(
                f"{num_slots} <im_patch> tokens in input_ids but {features.shape[0]} vision tokens from the pixels"
            )
        return embeds + torch.zeros_like(embeds).masked_scatter(is_patch[..., None], features)

    # ------------------------------------------------------------ forward / loss

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_token_pooling: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_token_pooling: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        annotation_ids: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
        z_loss_weight: float = 0.0,
        loss_normalizer: float | torch.Tensor | None = None,
        return_logits: bool = True,
        loss_positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        **processor_extras,  # image_grids, video_grids, image_num_crops, ...: not needed here
    ) -> ModelOutput:
        """Logits `[B, L, vocab]`, or with `labels` the loss and the logits at the loss positions `[N, vocab]`.

        mm_token_type_ids: `[B, L]`, 1 at vision tokens (the processor's output); they attend bidirectionally.
        segment_ids / annotation_ids / position_ids: packed sequences (see LanguageModel.hidden_states).
        loss_weights: `[B, L]` per-token weights aligned with labels; z_loss_weight: PaLM's z-loss.
        return_logits=False (training): no logits are returned, and very many loss positions are computed
        in chunks recomputed during backward, so the [N, vocab] logits never all live in memory.
        loss_positions: `[N, 2]` where the labels carry loss, found on the host by the collator (no device sync).
        """
        embeds = self.embed(input_ids, pixel_values, image_token_pooling, pixel_values_videos, video_token_pooling)
        return self.llm(
            labels=labels,
            inputs_embeds=embeds,
            loss_weights=loss_weights,
            z_loss_weight=z_loss_weight,
            loss_normalizer=loss_normalizer,
            return_logits=return_logits,
            loss_positions=loss_positions,
            position_ids=position_ids,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
            annotation_ids=annotation_ids,
            vision_mask=None if mm_token_type_ids is None else mm_token_type_ids > 0,
            cache=cache,
        )

    # ------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
        greedy_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **vision_inputs,
    ) -> torch.Tensor:
        """Greedy (temperature 0) or temperature/top-p sampling with the KV cache.

        input_ids: `[B, L]`, left-padded when prompts differ in length (attention_mask 0 on the padding).
        on_token: called with each step's tokens `[B]` as soon as they are picked (streaming).
        greedy_head: hidden states `[B, D]` -> the head's argmax rows `[B]`, computed another way (the exact
        screened head of eval/screened_head.py); used when greedy. Default: the full head.
        Returns only the new tokens `[B, <= max_new_tokens]`; rows that finished early are filled with EOS.
        """
        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        B, L = input_ids.shape
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: plain causal attention is faster
        if attention_mask is None:
            position_ids = torch.arange(L, device=input_ids.device).expand(B, L)
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = KVCache(self.config.llm, B, L + max_new_tokens, input_ids.device, self.llm.embed_tokens.weight.dtype)
        mm_token_type_ids = vision_inputs.pop("mm_token_type_ids", None)
        vision_inputs = {k: v for k, v in vision_inputs.items() if k in _VISION_INPUT_NAMES}
        embeds = self.embed(input_ids, **vision_inputs)
        hidden = self.llm.hidden_states(
            embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            vision_mask=None if mm_token_type_ids is None else mm_token_type_ids > 0,
            cache=cache,
        )
        next_position = position_ids[:, -1:] + 1
        finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        new_tokens = []
        for step in range(max_new_tokens):
            if greedy_head is not None and temperature <= 0:
                rows = greedy_head(hidden[:, -1])
            else:
                scores = hidden[:, -1] @ self.llm.head_weight.t()  # [B, vocab] (or the restricted vocabulary)
                rows = _pick_token(scores.float(), temperature, top_p, generator)
            token = torch.where(finished, eos, self.llm.output_vocabulary.token_ids(rows))
            new_tokens.append(token)
            if on_token is not None:
                on_token(token)
            finished |= token == eos
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, 1)], dim=1)
            hidden = self.llm.hidden_states(
                self.llm.embed_tokens(token[:, None]),
                position_ids=next_position,
                attention_mask=attention_mask,
                cache=cache,
            )
            next_position = next_position + 1
        return torch.stack(new_tokens, dim=1)

    # ------------------------------------------------------------ weights in and out

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> NanoMolmo2:
        """Load a Molmo2 checkpoint: a folder (released allenai/Molmo2-* layout or a save_pretrained) or a Hub id."""
        folder, cfg, weights = read_checkpoint(path, molmo2_keys)
        config = molmo2_config(cfg)
        model = cls(config)
        state = molmo2_state_to_ours(weights, config)
        load_state_strict(model, state, f"Molmo2 checkpoint {folder}")
        return model.to(dtype)

    @classmethod
    def from_molmo2_and_qwen3(
        cls, molmo2_path: str | Path, qwen3_path: str | Path, projector_hidden_size: int | None = None
    ) -> NanoMolmo2:
        """The nanoMolmo2 default: Molmo2's ViT and pooling attention, a Qwen3 LLM, and a new projector.

        The pooling attention does not depend on the LLM, so it is kept; the projector (whose output
        width is the LLM's) starts fresh, with hidden width = the LLM's FFN width unless given. Only the ViT and
        the pooling of the Molmo2 checkpoint are read (and downloaded), never its LLM."""
        _, cfg, weights = read_checkpoint(molmo2_path, lambda cfg: molmo2_keys(cfg, ("vit", "pooling")))
        molmo2 = molmo2_config(cfg)
        weights = molmo2_state_to_ours(weights, molmo2)
        llm = LanguageModel.from_pretrained(qwen3_path)
        connector = molmo2.connector
        connector.projector_hidden_size = projector_hidden_size or llm.config.intermediate_size
        model = cls(NanoMolmo2Config(llm=llm.config, vision=molmo2.vision, connector=connector))
        model.llm.load_state_dict(llm.state_dict())
        load_state_strict(model.vision, subtree(weights, "vision."), f"vision encoder of {molmo2_path}")
        load_state_strict(model.connector.pool, subtree(weights, "connector.pool."), f"pooling of {molmo2_path}")
        return model

    @classmethod
    def from_vision_and_qwen3(
        cls, vision_path: str | Path, qwen3_path: str | Path, config: NanoMolmo2Config
    ) -> NanoMolmo2:
        """Molmo2's own start: a pretrained vision encoder (SigLIP, CLIP or Molmo2) and Qwen3 with a new connector.
        `config` gives the connector, feature layers, crops and output vocabulary; the folders give the rest."""
        vision = VisionEncoder.from_pretrained(vision_path, config.vision.feature_layers)
        vision.config.max_crops, vision.config.overlap_margins = config.vision.max_crops, config.vision.overlap_margins
        llm = LanguageModel.from_pretrained(qwen3_path)
        llm.config.output_token_ids = config.llm.output_token_ids
        model = cls(NanoMolmo2Config(llm=llm.config, vision=vision.config, connector=config.connector))
        model.vision.load_state_dict(vision.state_dict())
        model.llm.load_state_dict(llm.state_dict())
        return model

    def save_pretrained(self, path: str | Path, state_dict: dict | None = None, tokenizer: str | None = None) -> None:
        """Write a complete Molmo2 folder (weights, config, tokenizer, processor and generation files) that transformers
        loads and serves unchanged. state_dict: the weights, when not this module's own (e.g. gathered from FSDP
        shards); tokenizer: the tokenizer.json text to ship (`Tokenizer.to_json()`; default: the bundled Qwen3 one)."""
        state = ours_to_molmo2_state(state_dict if state_dict is not None else self.state_dict(), self.config)
        write_folder_atomically(Path(path), {**molmo2_folder_files(self.config, tokenizer), "model.safetensors": state})


_VISION_INPUT_NAMES = ("pixel_values", "image_token_pooling", "pixel_values_videos", "video_token_pooling")


def _pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    """Greedy when temperature is 0, else sample from the top-p nucleus of softmax(logits / temperature)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
