"""Food-101 (101 dishes): CoOp's split file, or a 50/20/30 split of the class folders.

CoOp does not use the dataset's own ``meta/train.txt``/``meta/test.txt``: without the split file the split is
drawn from the folders like DTD's, and so is ours.
"""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, read_and_split_data


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    dataset_dir = "food-101"
    expected = ExpectedSizes(train=50500, val=20200, test=30300, classes=101)
    image_subdir = "images"
    split_filename = "split_zhou_Food101.json"
    layout = """\
food-101/
    images/<class>/<id>.jpg     (101 class folders, e.g. apple_pie/)
    split_zhou_Food101.json
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        self.require(self.image_dir, "image folder", is_dir=True, hint=self.no_split_hint)
        return read_and_split_data(self.image_dir)
