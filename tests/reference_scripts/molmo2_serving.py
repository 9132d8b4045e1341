"""Serve saved nanoMolmo2 folders with transformers alone, as a user or an inference server would; run in .venv-ref.

Usage: python molmo2_serving.py CASE.json OUT.pt
CASE.json: {"folder": path, "photo": path, "question": str, "max_new_tokens": int,
            "load_only": [paths of other folders that must load],
            "conversations": {name: messages}}  (rendered by the chat template only)
Nothing is added to the folders: AutoProcessor and AutoModelForImageTextToText read them as they are.
"""

import json
import sys

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer


def settings(processor) -> dict:
    """What the folder configured: the processor's token layout, its image / video processors, the tokenizer."""
    image, video, tok = processor.image_processor, processor.video_processor, processor.tokenizer
    return {
        "classes": [type(processor).__name__, type(image).__name__, type(video).__name__],
        "layout": [
            processor.image_use_col_tokens,
            processor.use_single_crop_col_tokens,
            processor.use_single_crop_start_token,
            processor.video_use_col_tokens,
            processor.use_frame_special_tokens,
        ],
        "image": [image.size["height"], image.patch_size, image.max_crops, list(image.overlap_margins)]
        + [list(image.pooling_size), list(image.image_mean), list(image.image_std), image.do_normalize],
        "video": [video.size["height"], video.patch_size, list(video.pooling_size), video.do_normalize],
        "tokens": [tok.bos_token, tok.eos_token, tok.pad_token, tok.convert_tokens_to_ids("<im_patch>")],
        "chat_template": processor.chat_template is not None and tok.chat_template is not None,
    }


def main(case_path: str, out_path: str) -> None:
    case = json.loads(open(case_path).read())
    processor = AutoProcessor.from_pretrained(case["folder"])
    model = AutoModelForImageTextToText.from_pretrained(case["folder"], dtype=torch.float32).eval()
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "path": case["photo"]}, {"type": "text", "text": case["question"]}],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=case["max_new_tokens"],
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, inputs["input_ids"].shape[1] :]
    tokenizer = AutoTokenizer.from_pretrained(case["folder"])
    results = {
        "model_class": type(model).__name__,
        "generation": [model.generation_config.eos_token_id, model.generation_config.pad_token_id],
        "settings": settings(processor),
        "input_ids": inputs["input_ids"],
        "pixel_values": inputs["pixel_values"],
        "image_token_pooling": inputs["image_token_pooling"],
        "new_tokens": new,
        "first_logits": out.logits[0][0],  # the next-token logits after the prompt
        "text": processor.decode(new, skip_special_tokens=False),
        # Qwen's and Molmo2's special tokens, which skip_special_tokens must drop
        "specials_skipped": tokenizer.decode(
            list(range(151936, 151946)) + [151643, 151644, 151645], skip_special_tokens=True
        ),
        "templates": {
            name: processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
            for name, conversation in case["conversations"].items()
        },
        "load_only": {},
    }
    for folder in case["load_only"]:
        other = AutoProcessor.from_pretrained(folder)
        other_model = AutoModelForImageTextToText.from_pretrained(folder)
        results["load_only"][folder] = [settings(other), type(other_model).__name__]
    torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
