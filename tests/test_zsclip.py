"""Zero-shot CLIP: the template lists and the class text features built from them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clip
import datasets  # noqa: F401  (registers the datasets)
from engine.data.datasets import DATASET_REGISTRY
from trainers.templates import (
    CUSTOM_TEMPLATES,
    IMAGENET_TEMPLATES,
    IMAGENET_TEMPLATES_SELECT,
    dataset_template,
    ensemble_templates,
    fill,
    promptsrc_templates,
)
from trainers.zsclip import template_text_features


def test_template_lists():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert set(IMAGENET_TEMPLATES_SELECT) <= set(IMAGENET_TEMPLATES) and len(IMAGENET_TEMPLATES_SELECT) == 7
    assert all(t.count("{}") == 1 for t in (*IMAGENET_TEMPLATES, *CUSTOM_TEMPLATES.values()))
    src = promptsrc_templates()
    assert len(src) == 60 and src[0] == "a photo of a {}." and src[-1] == "itap of the {}."
    assert set(src) == set(IMAGENET_TEMPLATES[:60])


@pytest.mark.parametrize("name", DATASET_REGISTRY.registered_names())
def test_every_registered_dataset_has_a_hand_written_template(name):
    assert "{}" in dataset_template(name)


def test_unknown_dataset_names_the_key():
    with pytest.raises(KeyError, match="'Nope'.*CUSTOM_TEMPLATES"):
        dataset_template("Nope")


def test_ensemble_is_fresh_each_call_and_adds_the_dataset_template():
    first = ensemble_templates("EuroSAT")
    assert first == [*IMAGENET_TEMPLATES_SELECT, "a centered satellite photo of {}."]
    first.append("mutated {}.")
    assert ensemble_templates("EuroSAT") == first[:-1]  # the official class-level list grew; ours does not
    assert ensemble_templates("ImageNet") == list(IMAGENET_TEMPLATES_SELECT)


def test_fill_replaces_underscores():
    assert fill("a photo of a {}, a type of pet.", ["great_pyrenees"]) == [
        "a photo of a great pyrenees, a type of pet."
    ]


def test_template_text_features_single_and_ensemble():
    model = clip.build_clip("random:tiny")
    names = ["zero", "golden_retriever"]
    templates = ["a photo of a {}.", "art of the {}."]
    with torch.no_grad():
        per_template = [
            F.normalize(model.encode_text(clip.tokenize(fill(t, names))), dim=-1) for t in templates
        ]
        single = template_text_features(model, templates[:1], names)
        ensemble = template_text_features(model, templates, names)
    torch.testing.assert_close(single, per_template[0])
    torch.testing.assert_close(ensemble, F.normalize(per_template[0] + per_template[1], dim=-1))
    assert ensemble.shape == (2, model.embed_dim) and ensemble.dtype == torch.float32
    with pytest.raises(ValueError, match="at least one template"):
        template_text_features(model, [], names)
