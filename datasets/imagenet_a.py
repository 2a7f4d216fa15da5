"""ImageNet-A (test only): its own 200-class problem, labelled by the sorted wnid folders (0..199)."""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY

from .common import ExpectedSizes
from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    dataset_dir = "imagenet-adversarial"
    expected = ExpectedSizes(train=None, val=None, test=7500, classes=200)
    image_subdir = "imagenet-a"
    layout = """\
imagenet-adversarial/
    imagenet-a/<wnid>/*.jpg     (200 wnid folders; README.txt is not a class)
    classnames.txt              (ImageNet's file)
"""
