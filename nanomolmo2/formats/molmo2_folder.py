"""Everything a saved model folder holds besides its weights, so that transformers loads and serves it unchanged
(`AutoProcessor` / `AutoModelForImageTextToText.from_pretrained(folder)`, and inference servers built on them):

    config.json                     the model (molmo2.py; our own options in its `nanomolmo2` section)
    generation_config.json          EOS `<|im_end|>`, padding `<|endoftext|>`, as Molmo2's released folders
    tokenizer.json                  Qwen3's tokenizer with Molmo2's special tokens at their ids
    tokenizer_config.json           EOS / BOS / padding as Molmo2's released tokenizer has them
    chat_template.jinja             our chat layout (data/chat.py), read by transformers' tokenizer and processor
    processor_config.json           Molmo2Processor: which structure tokens surround the patches (processor.py)
    preprocessor_config.json        Molmo2ImageProcessor: crop and patch size, crops, margins, pooling, normalisation
    video_preprocessor_config.json  Molmo2VideoProcessor: frame size, pooling, normalisation

The values come from the model's config, so the processor transformers builds emits our token layout
(docs/MOLMO2.md, "Token layout" and "Checkpoints"). Options transformers' Molmo2 has no equivalent for (a restricted
output vocabulary, the global crop alone with max_crops = 0) are written as they are: nanoMolmo2 reads them back,
transformers cannot honour them.
"""

from __future__ import annotations

import warnings

from ..models.config import NanoMolmo2Config
from ..tokens import BOS_ID, PAD_ID
from .molmo2 import molmo2_config_dict
from .tokenizer_files import TokenizerError, molmo2_tokenizer, tokenizer_config

# Media first (labelled "Image i" when there are several), then ChatML turns; an answer ends with <|im_end|> and
# a later user turn starts on a new line. transformers' processor prepends BOS and expands the media markers.
CHAT_TEMPLATE = r"""{%- set media = namespace(images=0, videos=0) -%}
{%- for message in messages if message['content'] is not string -%}
  {%- for item in message['content'] -%}
    {%- if item['type'] == 'image' -%}{%- set media.images = media.images + 1 -%}
    {%- elif item['type'] == 'video' -%}{%- set media.videos = media.videos + 1 -%}{%- endif -%}
  {%- endfor -%}
{%- endfor -%}
{%- for i in range(media.images) -%}
  {{- ('Image ' ~ (i + 1) if media.images > 1 else '') ~ '<|image|>' -}}
{%- endfor -%}
{{- '<|video|>' * media.videos -}}
{%- for message in messages -%}
  {%- if message['role'] != ['user', 'assistant'][loop.index0 % 2] -%}
    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
  {%- endif -%}
  {%- set text = message['content'] -%}
  {%- if text is not string -%}
    {%- set text = text | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}
  {%- endif -%}
  {%- if message['role'] == 'user' -%}
    {{- ('' if loop.first else '\n') ~ '<|im_start|>user\n' ~ text ~ '<|im_end|>\n' -}}
  {%- else -%}
    {{- '<|im_start|>assistant\n' ~ text ~ '<|im_end|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# Pixels map to [-1, 1] (docs/MOLMO2.md, "Image resize and normalisation"); resample 2 = bilinear.
PIXELS = {
    "do_convert_rgb": True,
    "do_resize": True,
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


def processor_config() -> dict:
    """The token layout of data/processor.py: `<im_col>` after every high-resolution row but none in the
    low-resolution part (as the released models), `<low_res_im_start>` first, frames in `<frame_start>` /
    `<frame_end>` without `<im_col>`."""
    return {
        "processor_class": "Molmo2Processor",
        "image_use_col_tokens": True,
        "use_single_crop_col_tokens": False,
        "use_single_crop_start_token": True,
        "video_use_col_tokens": False,
        "use_frame_special_tokens": True,
    }


def preprocessor_config(config: NanoMolmo2Config) -> dict:
    vision = config.vision
    return {
        "image_processor_type": "Molmo2ImageProcessor",
        "processor_class": "Molmo2Processor",
        "size": {"height": vision.image_size, "width": vision.image_size},
        "patch_size": vision.patch_size,
        "max_crops": vision.max_crops,
        "overlap_margins": list(vision.overlap_margins),
        "pooling_size": list(config.connector.image_pooling),
        **PIXELS,
    }


def video_preprocessor_config(config: NanoMolmo2Config) -> dict:
    """Frame size, pooling and pixels are ours; frame sampling is transformers' own (64 frames, at most 2 fps),
    not the training code's (docs/MOLMO2.md, "Video frames")."""
    vision = config.vision
    return {
        "video_processor_type": "Molmo2VideoProcessor",
        "processor_class": "Molmo2Processor",
        "size": {"height": vision.image_size, "width": vision.image_size},
        "patch_size": vision.patch_size,
        "pooling_size": list(config.connector.video_pooling),
        "do_sample_frames": True,
        "num_frames": 64,
        "max_fps": 2,
        **PIXELS,
    }


def generation_config(config: NanoMolmo2Config) -> dict:
    return {"bos_token_id": BOS_ID, "eos_token_id": config.eos_token_id, "pad_token_id": PAD_ID}


def molmo2_folder_files(config: NanoMolmo2Config, tokenizer_json: str | None = None) -> dict[str, dict | str]:
    """Every file of a saved folder but the weights: `{name: json dict | text}`. tokenizer_json: the tokenizer.json
    text to ship (default: the bundled Qwen3 one with Molmo2's tokens; left out, with a warning, when not installed)."""
    files: dict[str, dict | str] = {
        "config.json": molmo2_config_dict(config),
        "generation_config.json": generation_config(config),
        "processor_config.json": processor_config(),
        "preprocessor_config.json": preprocessor_config(config),
        "video_preprocessor_config.json": video_preprocessor_config(config),
    }
    if tokenizer_json is None:
        try:
            tokenizer_json = molmo2_tokenizer().to_str()
        except TokenizerError as e:
            warnings.warn(f"the folder gets no tokenizer files: {e}", stacklevel=3)
            return files
    files["tokenizer.json"] = tokenizer_json
    files["tokenizer_config.json"] = tokenizer_config(config.llm.max_position_embeddings)
    files["chat_template.jinja"] = CHAT_TEMPLATE
    return files
