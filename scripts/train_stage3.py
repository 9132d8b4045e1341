"""Stage 3 (long-context fine-tuning, more frames): `nanomolmo2 train --stage 3`.

python scripts/train_stage3.py --data /data/molmo2 --init-from runs/stage2/final --out-dir runs/stage3
python scripts/train_stage3.py --config tiny_stage3 --data data/shapes --init-from runs/tiny/stage2/final
"""

import sys

from nanomolmo2.train import main

if __name__ == "__main__":
    main(["--stage", "3", *sys.argv[1:]])
