"""The generic converter: two tables shaped differently (inline image bytes with a list of answers in parquet;
image URLs with ShareGPT conversations in JSONL) -> the project's JSONL, read back by the datasets."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanomolmo2.cli import main
from nanomolmo2.data.datasets import JsonlDataset
from nanomolmo2.prepare.command import prepare
from nanomolmo2.prepare.generic import parse_columns

from .test_download import MediaServer, jpeg_bytes, no_proxy, png_bytes, quick_downloader, sha256  # noqa: F401

VQA_TABLE = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
    ]
)


@pytest.fixture
def server():
    s = MediaServer()
    yield s
    s.close()


def test_inline_images_and_a_list_of_answers_from_parquet(tmp_path):
    a, b = png_bytes(20, 10, seed=1), jpeg_bytes(16, 16)
    rows = [
        {
            "image": {"bytes": a, "path": "a.png"},
            "question": "<image>\nWhat colour?",
            "answers": ["red", "red", "pink"],
        },
        {"image": {"bytes": a, "path": "a.png"}, "question": "How many?", "answers": ["2"]},
        {"image": {"bytes": b, "path": None}, "question": "Which side?", "answers": ["left"]},
        {"image": {"bytes": b"", "path": None}, "question": "Broken?", "answers": ["yes"]},  # no bytes: malformed
        {"image": {"bytes": b, "path": None}, "question": "Nothing?", "answers": []},  # no answer: malformed
    ]
    table = tmp_path / "vqav2" / "train-00000.parquet"
    table.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=VQA_TABLE), table)
    columns = parse_columns("image=image,question=question,answers=answers")
    report = prepare("lmms-lab/VQAv2", table.parent, tmp_path / "out", columns=columns)
    assert (report["dataset"], report["rows"], report["lines"], report["malformed_rows"]) == ("VQAv2", 5, 2, 2)
    lines = [json.loads(line) for line in (tmp_path / "out" / "VQAv2.jsonl").read_text().splitlines()]
    first = lines[0]
    assert first["images"] == [f"media/inline/{sha256(a)}.png"]  # written once, named by its bytes
    assert (tmp_path / "out" / first["images"][0]).read_bytes() == a
    assert lines[1]["images"][0].endswith(".jpg")
    assert first["annotations"][0] == {
        "task": "vqa", "question": "What colour?", "answer": "red", "answers": ["red", "red", "pink"],
    }  # fmt: skip
    assert [a["question"] for a in first["annotations"]] == ["What colour?", "How many?"]  # one line per image
    dataset = JsonlDataset(tmp_path / "out")
    example = dataset[0]
    assert len(example.conversations) == 2 and example.conversations[0].turns == [("What colour?", "red")]


def test_image_urls_and_sharegpt_conversations_from_jsonl(server, tmp_path):
    photo = jpeg_bytes(32, 24)
    server.routes.update({"/p.jpg": ("ok", photo)})
    rows = [
        {"img": server.url("/p.jpg"), "conversations": [
            {"from": "system", "value": "Be brief."}, {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "Noise."}, {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
        {"img": server.url("/gone.jpg"), "conversations": [
            {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},  # its image is a 404
        {"img": server.url("/p.jpg"), "conversations": [{"from": "gpt", "value": "I start?"}]},  # malformed
    ]  # fmt: skip
    table = tmp_path / "chats.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = parse_columns("image=img,messages=conversations")
    report = prepare("my-chats", table, tmp_path / "out", downloader=quick_downloader(), columns=columns)
    assert (report["lines"], report["media"]["failed"], report["malformed_rows"]) == (1, 1, 1)
    assert report["rows_without_media"] == 1  # the row whose image is a 404: left out, counted
    (line,) = [json.loads(x) for x in (tmp_path / "out" / "my-chats.jsonl").read_text().splitlines()]
    assert line["annotations"] == [{"task": "chat", "messages": [
        {"role": "user", "content": "System: Be brief.\nWhat is it?"}, {"role": "assistant", "content": "Noise."},
        {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes."}]}]  # fmt: skip
    example = JsonlDataset(tmp_path / "out")[0]
    assert len(example.images) == 1 and example.conversations[0].turns[1] == ("Sure?", "Yes.")


def test_column_mappings_that_cannot_work_are_one_line_errors(tmp_path, capsys):
    table = tmp_path / "t.jsonl"
    table.write_text("{}\n")
    for columns, message in [
        ("image=img,question=q", "give question with answer"),
        ("image=img,question=q,answer=a,messages=m", "one of them"),
        ("picture=img,question=q,answer=a", "KEY=COLUMN pairs"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "x", "--from", str(table), "--out", str(tmp_path / "o"), "--columns", columns])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
