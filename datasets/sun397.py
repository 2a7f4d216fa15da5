"""SUN397 (397 scenes): CoOp's split file, or 80/20 of ``Training_01.txt`` plus ``Testing_01.txt``."""

from __future__ import annotations

import os

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, split_trainval


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    dataset_dir = "sun397"
    expected = ExpectedSizes(train=15880, val=3970, test=19850, classes=397)
    image_subdir = "SUN397"
    split_filename = "split_zhou_SUN397.json"
    layout = """\
sun397/
    SUN397/<letter>/<scene>[/<sub-scene>]/sun_<id>.jpg
    split_zhou_SUN397.json
    ClassName.txt, Training_01.txt, Testing_01.txt   (read only when the split file is absent)
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        names_file = self.require(
            os.path.join(self.dataset_dir, "ClassName.txt"), "class list", hint=self.no_split_hint
        )
        with open(names_file) as f:
            cname2lab = {line.strip()[1:]: i for i, line in enumerate(f)}
        trainval = self.read_data(cname2lab, "Training_01.txt")
        test = self.read_data(cname2lab, "Testing_01.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab: dict[str, int], text_file: str) -> list[Datum]:
        """``/a/abbey/sun_x.jpg`` lines; the class name drops the letter folder and reverses the rest."""
        filepath = self.require(
            os.path.join(self.dataset_dir, text_file), "image list", hint=self.no_split_hint
        )
        items = []
        with open(filepath) as f:
            for lineno, line in enumerate(f, 1):
                imname = line.strip()[1:]
                folder = os.path.dirname(imname)
                if folder not in cname2lab:
                    raise ValueError(
                        f"{filepath}:{lineno}: class folder {folder!r} is not listed in ClassName.txt"
                    )
                classname = " ".join(folder.split("/")[1:][::-1])
                impath = os.path.join(self.image_dir, imname)
                items.append(Datum(impath=impath, label=cname2lab[folder], classname=classname))
        return items
