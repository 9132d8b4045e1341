"""Stage 1 (pre-training: captions, pointing, counting, text): `nanomolmo2 train --stage 1`.

python scripts/train_stage1.py --data /data/molmo2 --set molmo2_path=Molmo2-4B/ --set qwen3_path=Qwen3-0.6B/
python scripts/train_stage1.py --config tiny_stage1 --data data/shapes --out-dir runs/tiny/stage1
"""

import sys

from nanomolmo2.train import main

if __name__ == "__main__":
    main(["--stage", "1", *sys.argv[1:]])
