"""The benchmark datasets; importing this package registers every reader in ``DATASET_REGISTRY``.

They register as built-ins: an outside reader of the same name (a repository's own ``OxfordPets``)
takes the name over, with a note.
"""

from engine.data.datasets import DATASET_REGISTRY

with DATASET_REGISTRY.builtins():
    from . import (  # noqa: F401
        caltech101,
        digits,
        dtd,
        eurosat,
        fgvc_aircraft,
        food101,
        image_folder,
        imagenet,
        imagenet_a,
        imagenet_r,
        imagenet_sketch,
        imagenetv2,
        oxford_flowers,
        oxford_pets,
        stanford_cars,
        sun397,
        toy_shapes,
        ucf101,
    )
