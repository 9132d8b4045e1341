"""Training: the config, the optimizer and its schedule, the loop, checkpoints and distributed set-up.

- config.py       TrainConfig from a TOML file (or a packaged name) plus overrides
- optimizer.py    per-component AdamW groups, warmup + cosine schedule, freezing
- distributed.py  torchrun set-up, DDP / FSDP2 wrapping, collectives
- flops.py        FLOP counts of real batches for MFU (shared with bench/gpu.py)
- checkpoint.py   atomic, rotating, exactly resumable checkpoints; a corrupt one named, and fallen back from
- run_folder.py   one run per folder (a lock), no fresh run over an earlier one, a log without repeats
- trainer.py      the loop: data shards -> micro-batches -> loss -> AdamW, logging, validation, final/
"""
