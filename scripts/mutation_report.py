"""Print the score of the last `make mutation` run: killed / (all mutants that tests reach), per module.

mutmut writes one `mutants/<module>.py.meta` file per mutated module, with the exit code of the test run
for every mutant (1 = a test failed = killed, 0 = every test passed = survived). A mutant that no test reaches
("no tests") counts against the score too: untested code is what mutation testing is there to find. The
surviving mutants are listed with their diffs in mutants/survivors.txt, to be judged in docs/TESTING.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"


def main() -> int:
    metas = sorted(MUTANTS.rglob("*.py.meta"))
    if not metas:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 2
    rows, survivors, totals = [], [], Counter()
    for meta in metas:
        module = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = Counter(status_by_exit_code[code] for code in codes.values())
        survivors += [name for name, code in codes.items() if status_by_exit_code[code] in ("survived", "no tests")]
        killed = statuses["killed"] + statuses["timeout"] + statuses["segfault"]
        total = sum(statuses.values()) - statuses["skipped"]
        totals.update({"killed": killed, "total": total})
        rows.append((module, killed, total, statuses["survived"], statuses["no tests"]))
    width = max(len(r[0]) for r in rows)
    print(f"{'module':{width}}  killed  total  score  survived  no tests")
    for module, killed, total, survived, untested in rows:
        print(f"{module:{width}}  {killed:6d}  {total:5d}  {killed / max(total, 1):5.1%}  {survived:8d}  {untested:8d}")
    score = totals["killed"] / max(totals["total"], 1)
    print(f"{'all':{width}}  {totals['killed']:6d}  {totals['total']:5d}  {score:5.1%}")
    with open(MUTANTS / "survivors.txt", "w") as out:
        for name in survivors:
            diff = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", name], cwd=ROOT, capture_output=True, text=True
            ).stdout
            out.write(f"### {name}\n{diff}\n")
    print(f"surviving mutants with their diffs: {MUTANTS / 'survivors.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
