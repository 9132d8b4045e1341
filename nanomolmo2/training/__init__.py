"""Training: the config, the optimizer and its schedule, the loop, checkpoints and distributed set-up.

- config.py       TrainConfig from a TOML file (or a packaged name) plus overrides
- optimizer.py    per-component AdamW groups, warmup + cosine schedule, freezing
- distributed.py  torchrun set-up, DDP / FSDP2 wrapping, collectives
- flops.py        FLOP counts for tokens/s and MFU
- checkpoint.py   atomic, rotating, exactly resumable checkpoints
- trainer.py      the loop: data shards -> micro-batches -> loss -> AdamW, logging, validation, final/
"""
