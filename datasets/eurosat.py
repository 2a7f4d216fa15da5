"""EuroSAT (10 land-use classes): folder names replaced by CoOp's descriptive class names."""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, read_and_split_data

NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    dataset_dir = "eurosat"
    expected = ExpectedSizes(train=13500, val=5400, test=8100, classes=10)
    image_subdir = "2750"
    split_filename = "split_zhou_EuroSAT.json"
    layout = """\
eurosat/
    2750/<Class>/<Class>_<n>.jpg     (AnnualCrop/, Forest/, ... SeaLake/)
    split_zhou_EuroSAT.json
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        self.require(self.image_dir, "image folder", is_dir=True, hint=self.no_split_hint)
        return read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES, classes=list(NEW_CNAMES))
