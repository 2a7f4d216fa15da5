"""Oxford Flowers-102: CoOp's split file, or a per-class 50/20/30 split of ``imagelabels.mat``."""

from __future__ import annotations

import os
import random
from collections import defaultdict

from engine.data.datasets import DATASET_REGISTRY, Datum
from engine.utils import read_json

from .common import BenchmarkDataset, ExpectedSizes


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    dataset_dir = "oxford_flowers"
    expected = ExpectedSizes(train=4093, val=1633, test=2463, classes=102)
    image_subdir = "jpg"
    split_filename = "split_zhou_OxfordFlowers.json"
    layout = """\
oxford_flowers/
    jpg/image_<nnnnn>.jpg
    split_zhou_OxfordFlowers.json
    cat_to_name.json                  ({"1": "pink primrose", ...})
    imagelabels.mat                   (read only when the split file is absent)
"""

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Group images by label (order of first appearance in the .mat) and split each group 50/20/30."""
        from scipy.io import loadmat

        label_file = self.require(
            os.path.join(self.dataset_dir, "imagelabels.mat"), "label file", hint=self.no_split_hint
        )
        names_file = self.require(os.path.join(self.dataset_dir, "cat_to_name.json"), "class-name file")
        try:
            labels = loadmat(label_file)["labels"][0]
        except (KeyError, ValueError) as e:
            raise ValueError(f"{label_file}: expected a 1xN 'labels' array ({e})") from e
        lab2cname = read_json(names_file)

        tracker: dict[int, list[str]] = defaultdict(list)
        for i, label in enumerate(labels):
            tracker[int(label)].append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))

        print("Splitting data into 50% train, 20% val, and 30% test")
        train, val, test = [], [], []
        for label, impaths in tracker.items():
            if str(label) not in lab2cname:
                raise ValueError(
                    f"{names_file} has no name for label {label} (keys are 1-based label strings)"
                )
            random.shuffle(impaths)
            n_total = len(impaths)
            n_train = round(n_total * 0.5)
            n_val = round(n_total * 0.2)
            if n_train <= 0 or n_val <= 0 or n_total - n_train - n_val <= 0:
                raise ValueError(
                    f"{label_file}: label {label} has {n_total} images, too few for a 50/20/30 split"
                )
            cname = lab2cname[str(label)]
            for part, ims in (
                (train, impaths[:n_train]),
                (val, impaths[n_train : n_train + n_val]),
                (test, impaths[n_train + n_val :]),
            ):
                part.extend(Datum(impath=im, label=label - 1, classname=cname) for im in ims)
        return train, val, test
