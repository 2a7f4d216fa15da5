"""UCF101 (101 actions, one mid-video frame each): CamelCase actions become ``Split_Camel_Case`` names."""

from __future__ import annotations

import os
import re

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, split_trainval


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    dataset_dir = "ucf101"
    expected = ExpectedSizes(train=7639, val=1898, test=3783, classes=101)
    image_subdir = "UCF-101-midframes"
    split_filename = "split_zhou_UCF101.json"
    layout = """\
ucf101/
    UCF-101-midframes/<Action_Name>/v_<Action>_gNN_cNN.jpg
    split_zhou_UCF101.json
    ucfTrainTestlist/classInd.txt, trainlist01.txt, testlist01.txt   (read only when the split file is absent)
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        class_file = os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")
        self.require(class_file, "class index", hint=self.no_split_hint)
        cname2lab = {}
        with open(class_file) as f:
            for lineno, line in enumerate(f, 1):
                fields = line.strip().split(" ")
                if len(fields) != 2 or not fields[0].isdigit():
                    raise ValueError(f"{class_file}:{lineno}: expected '<1-based id> <Action>', got {line!r}")
                cname2lab[fields[1]] = int(fields[0]) - 1
        trainval = self.read_data(cname2lab, "trainlist01.txt")
        test = self.read_data(cname2lab, "testlist01.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab: dict[str, int], text_file: str) -> list[Datum]:
        """``Action/v_Action_gNN_cNN.avi [label]`` lines -> the frame ``<Split_Action>/v_....jpg``."""
        filepath = os.path.join(self.dataset_dir, "ucfTrainTestlist", text_file)
        self.require(filepath, "video list", hint=self.no_split_hint)
        items = []
        with open(filepath) as f:
            for lineno, line in enumerate(f, 1):
                action, _, filename = line.strip().split(" ")[0].partition("/")
                if action not in cname2lab:
                    raise ValueError(f"{filepath}:{lineno}: action {action!r} is not listed in classInd.txt")
                renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))
                impath = os.path.join(self.image_dir, renamed, filename.replace(".avi", ".jpg"))
                items.append(Datum(impath=impath, label=cname2lab[action], classname=renamed))
        return items
