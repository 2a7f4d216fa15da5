"""What the frozen CLIP says about each class: the teacher text banks of PromptSRC and CoPrompt.

* :func:`template_features` - PromptSRC's "textual diversity": raw (unnormalised) text features of every
  class averaged over a template list, (C, D).
* :func:`load_descriptions` + :func:`description_features` - CoPrompt's LLM-written class descriptions:
  a JSON file ``{class name: [sentence, ...]}`` with the same number K of sentences for every class,
  encoded and normalised per sentence, (K, C, D).

Both are built for one label space (the classes being trained); the teacher *image* side is simply the
frozen CLIP tower run without prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import clip as clip_pkg

__all__ = [
    "DESCRIPTION_KEYS",
    "description_features",
    "description_path",
    "encode_texts",
    "frozen_image_features",
    "load_descriptions",
    "template_features",
]

# DATASET.NAME -> file stem of CoPrompt's description files (``<stem>_prompt.json``), as released, plus
# the project's embedded test dataset.
DESCRIPTION_KEYS: dict[str, str] = {
    "Caltech101": "caltech",
    "DescribableTextures": "dtd",
    "EuroSAT": "eurosat",
    "FGVCAircraft": "fgvc",
    "Food101": "food101",
    "ImageNet": "imagenet",
    "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
    "ImageNetSketch": "imagenet_sketch",
    "ImageNetV2": "imagenetv2",
    "OxfordFlowers": "oxford_flowers",
    "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars",
    "SUN397": "sun397",
    "UCF101": "ucf101",
    "Digits": "digits",
    "ToyShapes": "toy_shapes",
    "ToyShapesShifted": "toy_shapes",
}
DESCRIPTION_SUFFIX = "_prompt.json"
_ENCODE_CHUNK = 256


@torch.no_grad()
def encode_texts(clip_model: nn.Module, token_ids: Tensor) -> Tensor:
    """Raw text features (N, D), fp32 (fp64 in an fp64 model), of tokenised texts, encoded in chunks to bound memory."""
    device = clip_model.token_embedding.weight.device
    parts = [clip_pkg.at_least_fp32(clip_model.encode_text(chunk.to(device))) for chunk in token_ids.split(_ENCODE_CHUNK)]
    return torch.cat(parts)


@torch.no_grad()
def frozen_image_features(clip_model: nn.Module, images: Tensor) -> Tensor:
    """Normalised (N, D) features (fp32, fp64 in an fp64 model) of the frozen image tower run without prompts: the teachers'
    image side (the releases keep a second copy of the same weights for this)."""
    return F.normalize(clip_pkg.at_least_fp32(clip_model.encode_image(images)), dim=-1)


def template_features(clip_model: nn.Module, templates: Sequence[str], classnames: Sequence[str]) -> Tensor:
    """Mean over ``templates`` of the raw class features, (C, D) (normalised only where used)."""
    if not templates:
        raise ValueError("template_features needs at least one template")
    names = [name.replace("_", " ") for name in classnames]
    token_ids = clip_pkg.tokenize([template.format(name) for template in templates for name in names])
    return encode_texts(clip_model, token_ids).view(len(templates), len(names), -1).mean(dim=0)


def description_path(directory: str, dataset_name: str, node: str = "TRAINER.CoPrompt") -> str:
    """``<directory>/<stem>_prompt.json`` for ``DATASET.NAME``; a clear error for an unknown dataset
    (``node``: the config node whose ``DESCRIPTION_FILE`` / ``DESCRIPTIONS_DIR`` the messages name)."""
    stem = DESCRIPTION_KEYS.get(dataset_name)
    if stem is None:
        raise KeyError(
            f"no description file name is known for DATASET.NAME {dataset_name!r} (known: "
            f"{', '.join(sorted(DESCRIPTION_KEYS))}); set {node}.DESCRIPTION_FILE to the file"
        )
    return os.path.join(directory, stem + DESCRIPTION_SUFFIX)


def load_descriptions(path: str, classnames: Sequence[str], node: str = "TRAINER.CoPrompt") -> list[list[str]]:
    """The description sentences of exactly ``classnames`` (in that order) from a CoPrompt JSON file.

    Classes are looked up with ``_`` replaced by spaces, as released. Errors name the file and the class:
    missing file, malformed content, a class without descriptions, an unequal sentence count.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"class description file {path} not found: download CoPrompt's gpt_file/ descriptions (see "
            f"docs/METHODS.md, CoPrompt) into {node}.DESCRIPTIONS_DIR or set {node}.DESCRIPTION_FILE"
        )
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"class description file {path} is not valid JSON: {e}") from e
    if not isinstance(table, dict):
        raise ValueError(f"class description file {path} must hold a JSON object {{class name: [sentences]}}")
    result, count = [], None
    for name in classnames:
        key = name.replace("_", " ")
        sentences = table.get(key)
        if sentences is None:
            raise KeyError(
                f"class {key!r} has no descriptions in {path} (the file has {len(table)} classes, "
                f"e.g. {sorted(table)[:3]})"
            )
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"class {key!r} in {path} must map to a non-empty list of sentences")
        if count is None:
            count, first = len(sentences), key
        elif len(sentences) != count:
            raise ValueError(
                f"class {key!r} in {path} has {len(sentences)} descriptions but {first!r} has {count}: "
                "every class needs the same number"
            )
        result.append(list(sentences))
    return result


def description_features(clip_model: nn.Module, descriptions: Sequence[Sequence[str]], source: str = "") -> Tensor:
    """Normalised features (K, C, D) of K descriptions per class (``descriptions[c][k]``)."""
    n_cls, k = len(descriptions), len(descriptions[0])
    texts = [sentence for per_class in descriptions for sentence in per_class]
    try:
        token_ids = clip_pkg.tokenize(texts)
    except RuntimeError as e:
        raise ValueError(f"a description in {source or 'the description file'} is too long: {e}") from e
    features = encode_texts(clip_model, token_ids)
    features = features / features.norm(dim=-1, keepdim=True)
    return features.view(n_cls, k, -1).transpose(0, 1).contiguous()
