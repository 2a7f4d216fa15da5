"""ImageNet-R (test only): its own 200-class problem, labelled by the sorted wnid folders (0..199)."""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY

from .common import ExpectedSizes
from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    dataset_dir = "imagenet-rendition"
    expected = ExpectedSizes(train=None, val=None, test=30000, classes=200)
    image_subdir = "imagenet-r"
    layout = """\
imagenet-rendition/
    imagenet-r/<wnid>/*.jpg     (200 wnid folders; README.txt is not a class)
    classnames.txt              (ImageNet's file)
"""
