"""FGVC-Aircraft (100 variants): the dataset's own train/val/test lists; no split JSON exists."""

from __future__ import annotations

import os

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    dataset_dir = "fgvc_aircraft"
    expected = ExpectedSizes(train=3334, val=3333, test=3333, classes=100)
    image_subdir = "images"
    layout = """\
fgvc_aircraft/
    images/<id>.jpg
    variants.txt                                  (one variant per line; label = line index)
    images_variant_train.txt, images_variant_val.txt, images_variant_test.txt
                                                  (lines '<id> <variant name>')
"""

    def read_splits(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        variants = self.require(os.path.join(self.dataset_dir, "variants.txt"), "variant list")
        self.require(self.image_dir, "image folder", is_dir=True)
        with open(variants) as f:
            cname2lab = {line.strip(): i for i, line in enumerate(f)}
        return tuple(
            self.read_data(cname2lab, f"images_variant_{split}.txt") for split in ("train", "val", "test")
        )

    def read_data(self, cname2lab: dict[str, int], split_file: str) -> list[Datum]:
        """Parse ``<id> <variant words>`` lines; the variant must be one of ``variants.txt``."""
        filepath = self.require(os.path.join(self.dataset_dir, split_file), "split list")
        items = []
        with open(filepath) as f:
            for lineno, line in enumerate(f, 1):
                fields = line.strip().split(" ")
                classname = " ".join(fields[1:])
                if classname not in cname2lab:
                    raise ValueError(
                        f"{filepath}:{lineno}: variant {classname!r} is not listed in variants.txt"
                    )
                impath = os.path.join(self.image_dir, fields[0] + ".jpg")
                items.append(Datum(impath=impath, label=cname2lab[classname], classname=classname))
        return items
