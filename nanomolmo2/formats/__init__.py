"""Checkpoint formats: plain `dict -> dict` conversions between other projects' files and our modules.

- weights.py  reading (only the tensors asked for) and writing safetensors folders, strict loading, atomic writes
- atomic.py   durable atomic writes (fsync before and after renames) and sweeping dead writers' temp files,
              for every writer of the package (checkpoints, final/, prepared datasets, downloads)
- keys.py     renaming by prefix tables, fusing q/k/v and up/gate, dropping unused keys
- hf.py       Hugging Face Qwen3 LLMs and SigLIP / CLIP vision towers (read)
- molmo2.py   Molmo2 checkpoints, released or written by transformers (read and written)
- hub.py      checkpoints by name: a folder, or a Hub id fetched through huggingface_hub (only the files needed)
- tokenizer_files.py  tokenizer.json with Molmo2's tokens, tokenizer_config.json, the bundled Qwen3 tokenizer
- molmo2_folder.py    the files beside the weights that let transformers serve a saved folder unchanged

Nothing here builds a module: the models' `from_pretrained` / `save_pretrained` call these functions.
"""
