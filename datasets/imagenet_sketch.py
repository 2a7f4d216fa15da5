"""ImageNet-Sketch (test only): sorted wnid folders, the same 1000 labels as ImageNet."""

from __future__ import annotations

from engine.data.datasets import DATASET_REGISTRY

from .common import ExpectedSizes
from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    dataset_dir = "imagenet-sketch"
    expected = ExpectedSizes(train=None, val=None, test=50889, classes=1000)
    image_subdir = "images"
    layout = """\
imagenet-sketch/
    images/<wnid>/*.JPEG     (1000 wnid folders)
    classnames.txt           (ImageNet's file)
"""
