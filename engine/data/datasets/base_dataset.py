"""Dassl's ``Datum`` and ``DatasetBase``: the in-memory form of every dataset split.

Attribute names (``_impath``, ``_label``, ``_domain``, ``_classname``) are Dassl's exactly, so few-shot caches
pickled by the official repositories and by us hold the same fields.
"""

from __future__ import annotations

import os
import random
import warnings
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["Datum", "DatasetBase"]


class Datum:
    """One labelled image. The image file must exist: a split that names a missing file is an error."""

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = "") -> None:
        if not isinstance(impath, str):
            raise TypeError(f"Datum impath must be a str, got {type(impath).__name__}: {impath!r}")
        if not os.path.isfile(impath):
            raise FileNotFoundError(f"Image listed in the split does not exist: {impath}")
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __repr__(self) -> str:
        return f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, classname={self._classname!r})"


class DatasetBase:
    """Holds train_x / train_u / val / test lists of ``Datum`` and derives the label space from train_x."""

    dataset_dir = ""
    domains: list[str] = []

    def __init__(
        self,
        train_x: list[Datum] | None = None,
        train_u: list[Datum] | None = None,
        val: list[Datum] | None = None,
        test: list[Datum] | None = None,
    ) -> None:
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self) -> list[Datum] | None:
        return self._train_x

    @property
    def train_u(self) -> list[Datum] | None:
        return self._train_u

    @property
    def val(self) -> list[Datum] | None:
        return self._val

    @property
    def test(self) -> list[Datum] | None:
        return self._test

    @property
    def lab2cname(self) -> dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> list[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source: Sequence[Datum] | None) -> int:
        """``max(label) + 1`` (Dassl's rule), not the number of distinct labels."""
        if not data_source:
            return 0
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source: Sequence[Datum] | None) -> tuple[dict[int, str], list[str]]:
        """Label -> class name from ``data_source``, and the names in ascending label order."""
        if not data_source:
            return {}, []
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return mapping, [mapping[label] for label in labels]

    def check_input_domains(self, source_domains: Sequence[str], target_domains: Sequence[str]) -> None:
        if source_domains:
            self.is_input_domain_valid(source_domains)
        if target_domains:
            self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains: Sequence[str]) -> None:
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def generate_fewshot_dataset(
        self, *data_sources: list[Datum], num_shots: int = -1, repeat: bool = False
    ) -> list[Datum] | tuple[list[Datum], ...]:
        """Sample ``num_shots`` items per label with python ``random``, exactly as Dassl does.

        Labels are visited in first-appearance order and ``random.sample`` is drawn per label, so the same
        seed picks the same images in the same order as the official repositories. A class with fewer than
        ``num_shots`` items contributes all of them (or ``random.choices`` with ``repeat``).
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources

        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset: list[Datum] = []
            for label, items in tracker.items():
                if len(items) >= num_shots:
                    sampled = random.sample(items, num_shots)
                elif repeat:
                    sampled = random.choices(items, k=num_shots)
                else:
                    warnings.warn(
                        f"Class {label} ({items[0].classname}) has only {len(items)} images, fewer than "
                        f"NUM_SHOTS={num_shots}: all of them are used", stacklevel=2
                    )
                    sampled = items
                dataset.extend(sampled)
            output.append(dataset)
        return output[0] if len(output) == 1 else tuple(output)

    @staticmethod
    def split_dataset_by_label(data_source: Sequence[Datum]) -> dict[int, list[Datum]]:
        """Group items by label, keeping first-appearance order of the labels."""
        output: dict[int, list[Datum]] = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source: Sequence[Datum]) -> dict[int, list[Datum]]:
        """Group items by domain, keeping first-appearance order."""
        output: dict[int, list[Datum]] = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output
