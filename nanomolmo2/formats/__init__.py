"""Checkpoint formats: plain `dict -> dict` conversions between other projects' files and our modules.

- weights.py  reading and writing safetensors folders, strict loading, atomic folder writes
- keys.py     renaming by prefix tables, fusing q/k/v and up/gate, dropping unused keys
- hf.py       Hugging Face Qwen3 LLMs and SigLIP / CLIP vision towers (read)
- molmo2.py   Molmo2 checkpoints, released or written by transformers (read and written)

Nothing here builds a module: the models' `from_pretrained` / `save_pretrained` call these functions.
"""
