"""Caltech-101 (100 object classes): the two background/duplicate folders are dropped, four classes renamed."""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, read_and_split_data

IGNORED = ("BACKGROUND_Google", "Faces_easy")
NEW_CNAMES = {
    "airplanes": "airplane",
    "Faces": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
}


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    dataset_dir = "caltech-101"
    expected = ExpectedSizes(train=4128, val=1649, test=2465, classes=100)
    image_subdir = "101_ObjectCategories"
    split_filename = "split_zhou_Caltech101.json"
    layout = """\
caltech-101/
    101_ObjectCategories/<category>/image_<n>.jpg     (BACKGROUND_Google/ and Faces_easy/ are ignored)
    split_zhou_Caltech101.json
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        self.require(self.image_dir, "image folder", is_dir=True, hint=self.no_split_hint)
        return read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
