"""Stanford Cars (196 models): split paths are relative to the dataset folder, names put the year first."""

from __future__ import annotations

import os

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, split_trainval


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    dataset_dir = "stanford_cars"
    expected = ExpectedSizes(train=6509, val=1635, test=8041, classes=196)
    split_filename = "split_zhou_StanfordCars.json"
    layout = """\
stanford_cars/
    cars_train/<nnnnn>.jpg
    cars_test/<nnnnn>.jpg
    split_zhou_StanfordCars.json     (paths inside are relative to stanford_cars/, e.g. cars_test/00001.jpg)
    devkit/cars_train_annos.mat, devkit/cars_meta.mat,
    cars_test_annos_withlabels.mat   (read only when the split file is absent)
"""

    @property
    def split_prefix(self) -> str:
        return self.dataset_dir

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        meta_file = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        trainval_file = os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat")
        test_file = os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat")
        trainval = self.read_data("cars_train", trainval_file, meta_file)
        test = self.read_data("cars_test", test_file, meta_file)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_data(self, image_dir: str, anno_file: str, meta_file: str) -> list[Datum]:
        """Read a devkit annotation ``.mat`` (fields ``fname``, 1-based ``class``) and name each class."""
        from scipy.io import loadmat

        for path in (anno_file, meta_file):
            self.require(path, "annotation file", hint=self.no_split_hint)
        try:
            annotations = loadmat(anno_file)["annotations"][0]
            class_names = loadmat(meta_file)["class_names"][0]
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"{anno_file} / {meta_file}: expected the devkit's 'annotations' and 'class_names' arrays ({e})"
            ) from e
        items = []
        for anno in annotations:
            label = int(anno["class"][0, 0]) - 1
            words = str(class_names[label][0]).split(" ")
            classname = " ".join([words[-1], *words[:-1]])
            impath = os.path.join(self.dataset_dir, image_dir, str(anno["fname"][0]))
            items.append(Datum(impath=impath, label=label, classname=classname))
        return items
