"""Describable Textures (47 categories): CoOp's split file, or a 50/20/30 split of the category folders."""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, read_and_split_data


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    dataset_dir = "dtd"
    expected = ExpectedSizes(train=2820, val=1128, test=1692, classes=47)
    image_subdir = "images"
    split_filename = "split_zhou_DescribableTextures.json"
    layout = """\
dtd/
    images/<category>/<category>_<n>.jpg     (47 category folders, e.g. banded/)
    split_zhou_DescribableTextures.json
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        self.require(self.image_dir, "image folder", is_dir=True, hint=self.no_split_hint)
        return read_and_split_data(self.image_dir)
