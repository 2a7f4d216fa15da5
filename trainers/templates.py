"""Text templates for zero-shot CLIP and for the frozen text teachers of PromptSRC-style methods.

One module so every method that needs templates reads the same lists:

* ``CUSTOM_TEMPLATES``: CoOp's hand-written template per dataset (keyed by ``DATASET.NAME``); the
  "CLIP" row of every base-to-new table is zero-shot CLIP with these.
* ``IMAGENET_TEMPLATES``: the 80 prompt-engineering templates of the CLIP paper, in CLIP's order.
* ``IMAGENET_TEMPLATES_SELECT``: the 7 templates CLIP selected from those 80 (ZeroshotCLIP2's ensemble).
* ``promptsrc_templates()``: the 60 templates PromptSRC averages its frozen text features over.
"""

from __future__ import annotations

CUSTOM_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    # The embedded test dataset (not in CoOp): digit images whose class names are the digits' names.
    "Digits": "a photo of the digit {}.",
    # The toy CLIP's benchmark (docs/TOY_CLIP.md): rendered colour-shape compositions.
    "ToyShapes": "a photo of a {}.",
    "ToyShapesShifted": "a photo of a {}.",
    # A user's own image folder (datasets/image_folder.py): CLIP's generic template, as for ImageNet.
    "ImageFolder": "a photo of a {}.",
}

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

IMAGENET_TEMPLATES_SELECT: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def dataset_template(dataset_name: str) -> str:
    """CoOp's hand-written template for a dataset; a clear error for a dataset that has none."""
    try:
        return CUSTOM_TEMPLATES[dataset_name]
    except KeyError:
        known = ", ".join(sorted(CUSTOM_TEMPLATES))
        raise KeyError(
            f"DATASET.NAME {dataset_name!r} has no hand-written template in trainers/templates.py "
            f"CUSTOM_TEMPLATES (known: {known}); add one there"
        ) from None


def ensemble_templates(dataset_name: str) -> list[str]:
    """ZeroshotCLIP2's ensemble: CLIP's 7 selected templates, plus the dataset's own unless it is ImageNet.

    Returns a new list each call (the official code appended to a shared module-level list, so the
    ensemble grew with every instantiation).
    """
    templates = list(IMAGENET_TEMPLATES_SELECT)
    if dataset_name != "ImageNet":
        templates.append(dataset_template(dataset_name))
    return templates


def promptsrc_templates() -> list[str]:
    """PromptSRC's 60 templates: CLIP's first 60, with ``a photo of a {}.`` moved to the front."""
    first = "a photo of a {}."
    return [first] + [t for t in IMAGENET_TEMPLATES[:60] if t != first]


def fill(template: str, classnames: list[str]) -> list[str]:
    """One prompt per class; underscores in class names become spaces, as in every official trainer."""
    return [template.format(name.replace("_", " ")) for name in classnames]


# KgCoOp's hand-crafted template per dataset (its knowledge-guided target). It differs from CoOp's
# CUSTOM_TEMPLATES for DescribableTextures ("a photo of a {}, a type of texture." instead of "{} texture.").
KGCOOP_TEMPLATES: dict[str, str] = {
    **CUSTOM_TEMPLATES,
    "DescribableTextures": "a photo of a {}, a type of texture.",
}

# TCP's hand-crafted template per dataset: the class knowledge its meta-net reads and its KG target.
# Differs from KgCoOp's for FGVCAircraft and Food101.
TCP_TEACHER_TEMPLATES: dict[str, str] = {
    **KGCOOP_TEMPLATES,
    "FGVCAircraft": "a photo of an aircraft {}.",
    "Food101": "a photo of a {}, a type of food.",
}

# TCP's learnable class prompts: the text after the N_CTX context slots. The release writes them with
# the four slots spelled out ("X X X X {}, a type of pet."; "a photo of a person doing {}." for UCF101
# and "a photo of a {}." for the ImageNet family, whose first four words the context then replaces);
# CLIP's tokenizer splits words independently, so the tokens after the slots are the same. StanfordCars
# has no final period, as released.
TCP_PROMPT_TEMPLATES: dict[str, str] = {
    "OxfordPets": "{}, a type of pet.",
    "OxfordFlowers": "{}, a type of flower.",
    "FGVCAircraft": "{}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "{}.",
    "StanfordCars": "{}, a type of car",
    "Food101": "{}, a type of food.",
    "SUN397": "{}.",
    "Caltech101": "{}.",
    "UCF101": "person doing {}.",
    "ImageNet": "{}.",
    "ImageNetSketch": "{}.",
    "ImageNetV2": "{}.",
    "ImageNetA": "{}.",
    "ImageNetR": "{}.",
    "Digits": "{}.",
    "ToyShapes": "{}.",
    "ToyShapesShifted": "{}.",
    "ImageFolder": "{}.",
}


def method_template(table: dict[str, str], table_name: str, dataset_name: str, override: str, key: str) -> str:
    """``override`` if set (config key ``key``), else ``table[dataset_name]``; a clear error otherwise."""
    if override:
        if "{}" not in override:
            raise ValueError(f"{key} must contain '{{}}' where the class name goes, got {override!r}")
        return override
    try:
        return table[dataset_name]
    except KeyError:
        raise KeyError(
            f"DATASET.NAME {dataset_name!r} has no template in trainers/templates.py {table_name} "
            f"(known: {', '.join(sorted(table))}); set {key} to one containing '{{}}'"
        ) from None
