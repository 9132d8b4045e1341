"""The offline dress rehearsal of the real training path: the documented commands, on public-shaped data, end to end.

    python -m tests.rehearsal.run --out runs/rehearsal           # `make rehearsal`
    python -m tests.rehearsal.run --out /tmp/rehearsal --quick   # the reduced version the test suite runs

Every step runs the command a user runs (docs/REAL_TRAINING.md), as a subprocess, offline:

1. checkpoints: tiny random `Qwen/Qwen3-0.6B` and `allenai/Molmo2-4B` and the dataset repos `allenai/<name>` in a
   Hugging Face cache, OUT/hf_home/hub (cache.py); every command runs with HF_HOME there and HF_HUB_OFFLINE=1;
2. media: PixMo / Molmo2 / tulu tables in their real column layouts whose images live on a local HTTPS server
   with its own certificate authority (OUT/tls/ca.pem, handed to the downloader through SSL_CERT_FILE), with
   404s, wrong hashes, transfers cut short and a slow host (tables.py);
3. data: `scripts/download_all.sh OUT/data` (tables from the cache, media over HTTPS); a held-out set of
   the same tables (another seed) prepared with `nanomolmo2 prepare ... --from` into OUT/heldout;
4. training: stage 1 -> 2 -> 3 under `torchrun --nproc_per_node 2` (gloo on CPU), the packaged stage configs with
   overrides that shrink the steps and sequences, stage 1 from the Hub ids, each next stage `--init-from` the
   previous `final/` (OUT/stage{1,2,3});
5. serving: transformers (.venv-ref, tests/reference_scripts/molmo2_serving.py) loads OUT/stage3/final with
   AutoProcessor + AutoModelForImageTextToText; its greedy answer on a real photo must be `nanomolmo2 generate`'s;
6. evaluation: `nanomolmo2 eval` on OUT/heldout writes OUT/eval.json; on a folder with nothing to evaluate it
   must stop with exit status 2 and say why.

OUT/rehearsal.json records each step: its commands, exit statuses, seconds and what it found. A failed command
stops the rehearsal (exit 1) with its output's tail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the project's environment: nanomolmo2, torchrun
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
QUESTION = "Describe this image."
NEW_TOKENS = 12
SIZES = {  # images / videos per table set, pixels, and steps per stage
    "full": dict(images=60, videos=4, heldout=20, size=96, steps=(8, 6, 3), retries=3),
    "quick": dict(images=20, videos=2, heldout=10, size=64, steps=(2, 2, 1), retries=1),
}
# What shrinks each stage to a CPU (model sizes come from the checkpoints): 2 ranks x 1 sequence per step.
SHRINK = ["--batch-size", "2", "--set", "micro_batch_size=1", "--set", "num_workers=0", "--set", "eval_every=0"]
STAGE_SHRINK = {1: ["--set", "seq_len=1024"], 2: ["--set", "seq_len=1536", "--set", "max_frames=8"]}
STAGE_SHRINK[3] = ["--set", "seq_len=2048", "--set", "max_frames=12"]


class StepFailed(RuntimeError):
    pass


def environment(out: Path) -> dict[str, str]:
    """Offline, the rehearsal's Hub cache, its certificate authority, no proxy for 127.0.0.1, one thread per process
    (two training processes on two cores)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return env | {
        "HF_HOME": str(out / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "SSL_CERT_FILE": str(out / "tls" / "ca.pem"),
        "NO_PROXY": "127.0.0.1,localhost",
        "OMP_NUM_THREADS": "1",
        "NANOMOLMO2": str(BIN / "nanomolmo2"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


class Rehearsal:
    def __init__(self, out: Path, size: str) -> None:
        self.out, self.sizes = out, SIZES[size]
        self.env = environment(out) | {"RETRIES": str(self.sizes["retries"])}  # read by download_all.sh
        self.record: dict = {"size": size, "steps": {}}

    def command(self, step: str, args: list, expect: int = 0, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run one command as a user would, logged under OUT/logs; an unexpected exit status stops the rehearsal."""
        args = [str(a) for a in args]
        start = time.time()
        result = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        seconds = round(time.time() - start, 1)
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        name = f"{step}-{len(self.record['steps'].get(step, {}).get('commands', []))}"
        (logs / f"{name}.log").write_text(f"$ {' '.join(args)}\n{result.stdout}\n--- stderr\n{result.stderr}")
        entry = self.record["steps"].setdefault(step, {"commands": []})
        entry["commands"].append({"args": args, "exit": result.returncode, "seconds": seconds})
        print(f"[{step}] {' '.join(Path(a).name if '/' in a and len(a) > 60 else a for a in args)[:160]} "
              f"-> exit {result.returncode} ({seconds} s)", flush=True)  # fmt: skip
        if result.returncode != expect:
            tail = (result.stdout + result.stderr)[-3000:]
            raise StepFailed(f"{step}: exit {result.returncode}, expected {expect} (log: {logs / name}.log)\n{tail}")
        return result

    def note(self, step: str, **findings) -> None:
        self.record["steps"].setdefault(step, {"commands": []}).update(findings)

    def save(self) -> None:
        (self.out / "rehearsal.json").write_text(json.dumps(self.record, indent=1))

    # ------------------------------------------------------------------ 1 + 2: the Hub cache and the media server

    def build_sources(self, server) -> None:
        from .cache import add_checkpoints, add_dataset_repos, write_tables
        from .tables import build_tables

        start = time.time()
        cache, work = self.out / "hf_home" / "hub", self.out / "work"
        work.mkdir(parents=True)
        add_checkpoints(cache, work)
        s = self.sizes
        train = build_tables(server, 0, s["images"], s["videos"], s["size"], work)
        add_dataset_repos(cache, write_tables(train, work / "tables"))
        heldout = build_tables(server, 1, s["heldout"], 0, s["size"], work)
        names = ("pixmo-points", "pixmo-count", "pixmo-ask-model-anything")
        write_tables({n: heldout[n] for n in names}, self.out / "heldout_tables")
        rows = {name: len(value[0]) for name, value in train.items() if isinstance(value, tuple)}
        self.note("sources", seconds=round(time.time() - start, 1), table_rows=rows, served=len(server.routes))

    # ------------------------------------------------------------------ 3: the data commands

    def prepare_data(self) -> None:
        self.command("data", ["bash", "scripts/download_all.sh", self.out / "data"])
        reports = {p.name.removesuffix(".report.json"): json.loads(p.read_text())
                   for p in sorted((self.out / "data").glob("*.report.json"))}  # fmt: skip
        self.note("data", reports={n: _report_counts(r) for n, r in reports.items()})
        for name in ("pixmo-points", "pixmo-count", "pixmo-ask-model-anything"):
            self.command(
                "heldout",
                [BIN / "nanomolmo2", "prepare", f"allenai/{name}", "--from", self.out / "heldout_tables" / name,
                 "--out", self.out / "heldout", "--workers", "4", "--retries", self.sizes["retries"]],
            )  # fmt: skip
        reports = {p.name.removesuffix(".report.json"): _report_counts(json.loads(p.read_text()))
                   for p in sorted((self.out / "heldout").glob("*.report.json"))}  # fmt: skip
        self.note("heldout", reports=reports)

    # ------------------------------------------------------------------ 4: three stages under torchrun

    def train(self) -> None:
        port = free_port()
        torchrun = [BIN / "torchrun", "--nproc_per_node", "2", "--master_port", port, "-m", "nanomolmo2.train"]
        for stage, steps in zip((1, 2, 3), self.sizes["steps"], strict=True):
            start = ["--set", "molmo2_path=allenai/Molmo2-4B", "--set", "qwen3_path=Qwen/Qwen3-0.6B"]
            if stage > 1:
                start = ["--init-from", self.out / f"stage{stage - 1}" / "final"]
            shrink = ["--max-steps", steps, *SHRINK, *STAGE_SHRINK[stage]]
            out = ["--data", self.out / "data", "--out-dir", self.out / f"stage{stage}"]
            args = [*torchrun, "--config", f"stage{stage}", *out, *start, *shrink]
            result = self.command(f"stage{stage}", args, timeout=1200)
            metrics = [json.loads(line) for line in (self.out / f"stage{stage}" / "metrics.jsonl").open()]
            notices = [line for line in result.stderr.splitlines() if "optional dataset" in line]
            self.note(
                f"stage{stage}",
                losses=[round(m["loss"], 4) for m in metrics],
                datasets=_mixture_names(self.out / f"stage{stage}"),
                optional_notices=len(notices),
            )  # fmt: skip

    # ------------------------------------------------------------------ 5: transformers serves the final folder

    def serve(self) -> None:
        from tests.data.media import real_photos

        final, photo = self.out / "stage3" / "final", real_photos()["china"]
        case = {"folder": str(final), "photo": str(photo), "question": QUESTION, "max_new_tokens": NEW_TOKENS,
                "load_only": [], "conversations": {}}  # fmt: skip
        work = self.out / "serving"
        work.mkdir()
        (work / "case.json").write_text(json.dumps(case))
        script = ROOT / "tests" / "reference_scripts" / "molmo2_serving.py"
        self.command("serving", [REF_PYTHON, script, work / "case.json", work / "transformers.pt"])
        import torch

        theirs = torch.load(work / "transformers.pt")
        ours = self.command(
            "serving",
            [BIN / "nanomolmo2", "generate", "--checkpoint", final, "--image", photo, "--prompt", QUESTION,
             "--max-new-tokens", NEW_TOKENS, "--dtype", "fp32", "--device", "cpu"],
        ).stdout.splitlines()  # fmt: skip
        text = theirs["text"].split("<|im_end|>")[0].strip()
        self.note(
            "serving",
            model_class=theirs["model_class"],
            transformers_tokens=theirs["new_tokens"].tolist(),
            transformers_answer=text,
            nanomolmo2_answer=ours[0] if ours else "",
        )

    # ------------------------------------------------------------------ 6: evaluation of the held-out data

    def evaluate(self) -> None:
        final, report = self.out / "stage3" / "final", self.out / "eval.json"
        self.command("eval", [BIN / "nanomolmo2", "eval", "--checkpoint", final, "--data", self.out / "heldout",
                              "--out", report, "--limit", 12])  # fmt: skip
        empty = self.out / "empty"
        empty.mkdir()
        chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
        (empty / "tulu.jsonl").write_text(json.dumps({"id": "t", "annotations": [{"task": "chat", "messages": chat}]}))
        refused = self.command("eval", [BIN / "nanomolmo2", "eval", "--checkpoint", final, "--data", empty], expect=2)
        self.note(
            "eval",
            metrics=json.loads(report.read_text())["metrics"],
            nothing_to_evaluate=refused.stderr.strip().splitlines()[-1],
        )

    def run(self) -> None:
        from tests.prepare.test_download import MediaServer
        from tests.prepare.tls import make_certificates, server_context

        (self.out / "tls").mkdir(parents=True)
        _, cert, key = make_certificates(self.out / "tls")
        server = MediaServer(server_context(cert, key))
        try:
            self.build_sources(server)
            self.prepare_data()
            self.note("server", hits=sum(server.hits.values()))
        finally:
            server.close()
        self.train()
        self.serve()
        self.evaluate()


def _report_counts(report: dict) -> dict:
    media = report["media"]
    return {"rows": report["rows"], "lines": report["lines"], "rows_without_media": report["rows_without_media"],
            "malformed_rows": report["malformed_rows"], "fetched": media["fetched"], "failed": media["failed"],
            "failures": sorted({why.split(":")[0] for why in media["failures"].values()})}  # fmt: skip


def _mixture_names(run: Path) -> list[str]:
    """The datasets the run trained on, from its model card ("Dataset sizes (rows): pixmo-cap 52, ...")."""
    card = (run / "final" / "README.md").read_text()
    line = next(line for line in card.splitlines() if line.startswith("Dataset sizes (rows): "))
    return sorted(part.rsplit(" ", 1)[0] for part in line.removeprefix("Dataset sizes (rows): ").split(", "))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_folder(out: Path) -> None:
    """OUT is the rehearsal's own: an earlier rehearsal there is replaced; any other non-empty folder is refused."""
    if out.exists() and any(out.iterdir()) and not (out / "rehearsal.json").is_file():
        raise SystemExit(f"{out} is not empty and holds no earlier rehearsal: choose another --out")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "rehearsal.json").write_text("{}")  # marks the folder as the rehearsal's from the start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/rehearsal", help="everything the rehearsal makes goes here")
    parser.add_argument("--quick", action="store_true", help="fewer rows and steps (the test suite's version)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    fresh_folder(out)
    rehearsal = Rehearsal(out, "quick" if args.quick else "full")
    start = time.time()
    try:
        rehearsal.run()
    except StepFailed as e:
        rehearsal.record["failed"] = str(e)
        print(f"rehearsal failed: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        rehearsal.record["seconds"] = round(time.time() - start, 1)
        rehearsal.save()
    print(f"rehearsal done in {rehearsal.record['seconds']} s: {out}")


if __name__ == "__main__":
    main()
