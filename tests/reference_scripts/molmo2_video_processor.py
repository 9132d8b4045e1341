"""Run transformers' Molmo2Processor / Molmo2VideoProcessor on videos; executed inside .venv-ref (torchvision).

Usage: python molmo2_video_processor.py CASES.json OUT.pt
CASES.json: {"process": [{"name", "text", "frames": path.npy, "fps", "indices": [...], "size"}],
             "sample": [{"name", "total", "fps"}]}
"process": frames already decoded (uint8 [T, H, W, 3]) with the indices they came from, so that transformers
writes timestamps index / fps. "sample": the frame indices transformers' own sampling picks.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from molmo2_processor import molmo2_tokenizer
from transformers import Molmo2ImageProcessor, Molmo2Processor, Molmo2VideoProcessor
from transformers.video_utils import VideoMetadata


def main(cases_path: str, out_path: str) -> None:
    cases = json.loads(Path(cases_path).read_text())
    tokenizer = molmo2_tokenizer()
    results = {}
    for case in cases["process"]:
        size = {"height": case.get("size", 378), "width": case.get("size", 378)}
        processor = Molmo2Processor(
            image_processor=Molmo2ImageProcessor(size=size),
            # transformers' class leaves do_rescale / do_normalize unset (raw 0-255 pixels would reach the ViT);
            # the released models' video preprocessor normalises like the image one, so configure that.
            video_processor=Molmo2VideoProcessor(size=size, do_rescale=True, do_normalize=True),
            tokenizer=tokenizer,
            use_single_crop_col_tokens=False,
        )
        frames = np.load(case["frames"])
        metadata = VideoMetadata(
            total_num_frames=int(max(case["indices"])) + 1, fps=case["fps"], frames_indices=case["indices"]
        )
        out = processor(
            text=case["text"], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
        )
        results[case["name"]] = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    sampler = Molmo2VideoProcessor()
    for case in cases["sample"]:
        metadata = VideoMetadata(total_num_frames=case["total"], fps=case["fps"])
        results[case["name"]] = torch.as_tensor(sampler.sample_frames(metadata))
    torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
