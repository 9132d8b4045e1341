"""Stage 2 (supervised fine-tuning on images and videos): `nanomolmo2 train --stage 2`.

python scripts/train_stage2.py --data /data/molmo2 --init-from runs/stage1/final --out-dir runs/stage2
python scripts/train_stage2.py --config tiny_stage2 --data data/shapes --init-from runs/tiny/stage1/final
"""

import sys

from nanomolmo2.train import main

if __name__ == "__main__":
    main(["--stage", "2", *sys.argv[1:]])
