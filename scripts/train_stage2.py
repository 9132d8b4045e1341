"""Stage 2 of the nanoMolmo2 recipe (the seed plan's script): `nanomolmo2 train --stage 2` with its defaults.

python scripts/train_stage2.py --config configs/stage2.toml --batch-size 128 --learning-rate 2e-5 --max-steps 1000
python scripts/train_stage2.py --config configs/tiny_stage2.toml --data data/shapes --resume-from runs/tiny/stage2
"""

import sys

from nanomolmo2.train import main

if __name__ == "__main__":
    main(["--stage", "2", *sys.argv[1:]])
