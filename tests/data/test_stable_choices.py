"""The stable choices of the data pipeline (which annotations an example takes, which prompt phrasing) depend on a
row's file name and line, not on where its folder lies: the same data in two folders trains the same way."""

import shutil

from nanomolmo2.data.datasets import CaptioningDataset, VideoDataset, VQADataset
from nanomolmo2.shapesworld.images import write_shapesworld
from nanomolmo2.shapesworld.videos import write_shapesworld_videos


def conversations(dataset, i: int) -> list:
    return [c.turns for c in dataset[i].conversations]


def test_the_same_rows_in_another_folder_give_the_same_examples(tmp_path):
    write_shapesworld(tmp_path / "a", 30, seed=0, image_size=56)
    write_shapesworld_videos(tmp_path / "a", 6, seed=0, image_size=56)
    shutil.copytree(tmp_path / "a", tmp_path / "somewhere" / "else")
    for kind in (CaptioningDataset, VQADataset, VideoDataset):
        here, there = (
            kind(tmp_path / "a", max_conversations=2),
            kind(tmp_path / "somewhere" / "else", max_conversations=2),
        )
        assert [conversations(here, i) for i in range(len(here))] == [
            conversations(there, i) for i in range(len(there))
        ]
    # ...and the choices do vary from row to row (a constant choice would pass the line above too)
    vqa = VQADataset(tmp_path / "a", max_conversations=2)
    assert len({conversations(vqa, i)[0][0][0] for i in range(len(vqa))}) > 5
    captions = CaptioningDataset(tmp_path / "a")
    assert len({conversations(captions, i)[0][0][0] for i in range(len(captions))}) > 1
