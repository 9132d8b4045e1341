"""`nanomolmo2 prepare` on tables nobody checked (prepare/command.py, tables.py, images.py): a non-finite number,
nesting too deep for the parser or a value no JSON can hold costs its row (reported with file:line), never the
run; only strict JSON is written; and no regular expression is quadratic on a long run of spaces."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanomolmo2.prepare.command import prepare

from .test_download import (
    MediaServer,
    leftovers,
    no_proxy,  # noqa: F401 (an autouse fixture: no proxy between the tests and 127.0.0.1)
    png_bytes,
    quick_downloader,
    sha256,
)
from .test_prepare import PIXMO_POINTS, write_jsonl, write_parquet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server():
    s = MediaServer()
    yield s
    s.close()


def test_one_bad_row_never_stops_prepare_and_only_valid_json_is_written(server, tmp_path):
    """Infinity, 1e999 and NaN in a JSONL table, NaN points in a parquet table and nesting too deep for the parser
    each cost their row (reported with file:line); the output is strict JSON; a killed run's temp file is swept."""
    image = png_bytes(40, 20)
    server.routes["/a.png"] = ("ok", image)
    url, out = server.url("/a.png"), tmp_path / "out"

    def row(**fields):
        return {"image_url": url, "image_sha256": sha256(image), "label": "dots", "count": 1, **fields}

    good = row(points={"x": [10.0], "y": [5.0]})
    bad_lines = [
        json.dumps(row(points={"x": [10.0], "y": [5.0]})).replace('"count": 1', '"count": Infinity'),
        json.dumps(row(points={"x": [10.0], "y": [5.0]})).replace('"count": 1', '"count": 1e999'),
        json.dumps(row(points={"x": [10.0], "y": [5.0]})).replace("10.0", "NaN"),
        '{"image_url": "' + url + '", "points": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ]
    (tmp_path / "tables").mkdir()
    table = write_jsonl(tmp_path / "tables" / "count.jsonl", [good], bad_lines)
    out.mkdir()
    (out / ".pixmo-count.jsonl.x1y2.part").write_text("left by a killed run")
    report = prepare("pixmo-count", table, out, None, quick_downloader())
    assert report["rows"] == 5 and report["lines"] == 1 and report["malformed_rows"] == 4
    reasons = "\n".join(report["malformed_examples"])
    for number, reason in [
        (2, "Infinity is not a number"),
        (3, "number 1e999 is not finite"),
        (4, "NaN"),
        (5, "nested too deep"),
    ]:
        assert f"count.jsonl:{number}: ValueError: {reason}" in reasons, reasons
    assert not leftovers(out)

    # A parquet table holds NaN as a float: the points would be NaN, which no JSON can hold.
    rows = [
        {"image_url": url, "image_sha256": sha256(image), "points": [{"x": 50.0, "y": 50.0}], "count": 1,
         "label": "a", "collection_method": "pointing"},
        {"image_url": url, "image_sha256": sha256(image), "points": [{"x": float("nan"), "y": 50.0}], "count": 1,
         "label": "b", "collection_method": "pointing"},
    ]  # fmt: skip
    (tmp_path / "points").mkdir()
    report = prepare("pixmo-points", write_parquet(tmp_path / "points" / "t.parquet", rows, PIXMO_POINTS), out)
    assert (
        report["lines"] == 1
        and report["malformed_rows"] == 1
        and "not JSON compliant" in report["malformed_examples"][0]
    )

    def strict(constant):
        raise AssertionError(f"{constant} in the output: not JSON")

    for name in ("pixmo-count.jsonl", "pixmo-points.jsonl", "pixmo-count.report.json"):
        for line in (out / name).read_text().splitlines() if name.endswith(".jsonl") else [(out / name).read_text()]:
            json.loads(line, parse_constant=strict)


def test_cap_qa_turns_take_linear_time_on_long_runs_of_spaces():
    """The turn markers were matched with `\\s*` around them, which rescans a run of spaces from every position in it
    (800 KB of spaces took 45 minutes). Two runs of a million spaces must convert under a CPU-time limit that a
    linear pass meets a thousand times over (a limit on CPU seconds, not a clock: load cannot make it fail)."""
    code = """if True:
        import resource, sys
        from nanomolmo2.prepare.images import cap_qa
        used = resource.getrusage(resource.RUSAGE_SELF)
        limit = int(used.ru_utime + used.ru_stime) + 20
        resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))
        spaces = " " * 1_000_000
        question = "[USER] What is it?" + spaces + "x [ASSISTANT] Noise." + spaces + "y [USER] And?" + spaces
        messages = cap_qa({"question": question + "[ASSISTANT]" + spaces, "answer": "Nothing."}, [])[0]["messages"]
        print([m["content"][:12].strip() for m in messages])
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['What is it?', 'Noise.', 'And?', 'Nothing.']"
