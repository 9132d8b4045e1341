"""A tiny training run for test_faults.py, to be killed: `python -m tests.training.fault_runner DATA OUT PAUSE`.

It resumes from OUT's latest complete checkpoint when there is one (as a job restarted by a scheduler would),
prints its progress on stdout ("start N", "step N", "saving .step_N.tmp", "done") and, inside every checkpoint save,
sleeps PAUSE seconds right after the model file is written, so that the test can kill it mid-save. Nothing in
the package is changed for this: the runner wraps two functions of its own process.
"""

import sys
import time
from pathlib import Path

from nanomolmo2.training import checkpoint
from nanomolmo2.training.trainer import Trainer

from .conftest import tiny_config

RUN = {
    "max_steps": 6,
    "save_every": 2,
    "keep_last": 2,
    "output_vocabulary": "data",
    "batch_size": 1,
    "micro_batch_size": 1,
}


def main(data: Path, out: Path, pause: float) -> None:
    save_file = checkpoint.save_file

    def slow_save_file(state, path):
        save_file(state, path)
        print(f"saving {Path(path).parent.name}", flush=True)
        time.sleep(pause)

    checkpoint.save_file = slow_save_file
    resume = str(out) if checkpoint.checkpoint_dirs(out) else ""
    trainer = Trainer(tiny_config(data, out, resume_from=resume, **RUN))
    print(f"start {trainer.step}", flush=True)
    train_step = trainer.train_step

    def reporting_train_step():
        metrics = train_step()
        print(f"step {trainer.step}", flush=True)
        return metrics

    trainer.train_step = reporting_train_step
    trainer.train()
    trainer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
