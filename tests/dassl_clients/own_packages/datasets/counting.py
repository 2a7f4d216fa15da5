from dassl.data.datasets import DATASET_REGISTRY, DatasetBase


@DATASET_REGISTRY.register()
class CountingDigits(DatasetBase):
    """This repository's own reader (its folder layout is of no concern to the fixture)."""

    dataset_dir = "counting_digits"
