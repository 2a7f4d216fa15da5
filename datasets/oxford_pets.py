"""Oxford-IIIT Pets (37 breeds): CoOp's split file, or trainval 80/20 plus the official test list."""

from __future__ import annotations

import os

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, split_trainval


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    dataset_dir = "oxford_pets"
    expected = ExpectedSizes(train=2944, val=736, test=3669, classes=37)
    image_subdir = "images"
    split_filename = "split_zhou_OxfordPets.json"
    layout = """\
oxford_pets/
    images/<Breed_name>_<n>.jpg
    split_zhou_OxfordPets.json
    annotations/trainval.txt, annotations/test.txt   (read only when the split file is absent)
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        trainval = self.read_data("trainval.txt")
        test = self.read_data("test.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_data(self, split_file: str) -> list[Datum]:
        """Parse ``annotations/<split_file>`` lines ``<image> <class id> <species> <breed id>``."""
        filepath = os.path.join(self.dataset_dir, "annotations", split_file)
        self.require(filepath, "annotation list", hint=self.no_split_hint)
        items = []
        with open(filepath) as f:
            for lineno, line in enumerate(f, 1):
                fields = line.strip().split(" ")
                if len(fields) != 4 or not fields[1].isdigit():
                    raise ValueError(
                        f"{filepath}:{lineno}: expected '<image> <class id> <species> <breed id>', got {line!r}"
                    )
                imname, label = fields[0], int(fields[1]) - 1
                breed = "_".join(imname.split("_")[:-1]).lower()
                impath = os.path.join(self.image_dir, imname + ".jpg")
                items.append(Datum(impath=impath, label=label, classname=breed))
        return items
