"""nanoMolmo2: a small, readable, pure-PyTorch Molmo2 (Qwen3-0.6B + Molmo2's vision encoder)."""

__version__ = "0.1.0"
