"""ImageNetV2 matched-frequency (test only): folder ``i`` holds class i of ``classnames.txt`` in file order."""

from __future__ import annotations

import os
from collections import OrderedDict

from engine.data.datasets import DATASET_REGISTRY

from .common import ExpectedSizes
from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    dataset_dir = "imagenetv2"
    expected = ExpectedSizes(train=None, val=None, test=10000, classes=1000)
    image_subdir = "imagenetv2-matched-frequency-format-val"
    layout = """\
imagenetv2/
    imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg
    classnames.txt     (ImageNet's file: line i names folder i)
"""

    def class_folders(self, classnames: OrderedDict[str, str], names_file: str) -> list[tuple[str, str]]:
        """Folder ``str(i)`` takes the i-th name of ``classnames.txt`` (file order, not sorted)."""
        names = list(classnames.values())
        for i in range(len(names)):
            hint = f"{names_file} lists {len(names)} classes, so folders 0..{len(names) - 1} are expected."
            self.require(os.path.join(self.image_dir, str(i)), "class folder", is_dir=True, hint=hint)
        return [(str(i), name) for i, name in enumerate(names)]
