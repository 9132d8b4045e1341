"""Stage 3 of the nanoMolmo2 recipe (the seed plan's script): `nanomolmo2 train --stage 3` with its defaults.

python scripts/train_stage3.py --config configs/stage3.toml --batch-size 128 --learning-rate 2e-5 --max-steps 1000
python scripts/train_stage3.py --config configs/tiny_stage3.toml --data data/shapes --resume-from runs/tiny/stage3
"""

import sys

from nanomolmo2.train import main

if __name__ == "__main__":
    main(["--stage", "3", *sys.argv[1:]])
