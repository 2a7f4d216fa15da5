"""Gather finished runs into (paradigm, method, dataset, seed) -> accuracy, and derive the table metrics.

Per dataset and seed, open-world metrics are: base accuracy, new accuracy, HM = harmonic mean of the
two, and Acc = the all-class accuracy (every class name, original labels). A dataset's entry is
mean +- population std over seeds of those per-seed numbers. Averages over datasets are computed per
seed first (mean of the per-dataset HMs *and* HM of the dataset-averaged base/new, see
``tools.metrics``), then summarised over seeds, so an average carries a std like the paper's Table 4.
An average is only computed when every dataset has every expected seed: missing runs are reported,
never averaged away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tools.metrics import Stat, harmonic_mean, hm_of_means, mean_of_hms, summarize
from tools.plan import Job, Step

__all__ = ["Entry", "Results", "collect", "OPEN_WORLD_METRICS"]

OPEN_WORLD_METRICS = ("base", "new", "hm", "hm_of_means", "acc")


@dataclass(frozen=True)
class Entry:
    """One table number: its summary over the seeds found, and how many seeds were expected."""

    stat: Stat | None
    expected: int

    @property
    def found(self) -> int:
        return 0 if self.stat is None else self.stat.n

    @property
    def complete(self) -> bool:
        return self.stat is not None and self.stat.n == self.expected


@dataclass
class Results:
    """Accuracies of finished steps, the seeds each (paradigm, method, dataset) expects, and what is missing."""

    values: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    expected: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    missing: list[Step] = field(default_factory=list)
    ci95: bool = False

    def seeds(self, method: str, dataset: str, paradigm: str) -> list[int]:
        return self.expected.get((paradigm, method, dataset), [])

    def value(self, paradigm: str, method: str, dataset: str, seed: int) -> float | None:
        return self.values.get((paradigm, method, dataset, seed))

    def _entry(self, per_seed: dict[int, float], expected: int) -> Entry:
        if not per_seed:
            return Entry(None, expected)
        return Entry(summarize(list(per_seed.values()), ci95=self.ci95), expected)

    # ---- open world (base / new / all label spaces) ---------------------------------------------
    def open_world_seed(self, method: str, dataset: str, seed: int) -> dict[str, float]:
        """base, new, hm and acc of one seed (only those whose runs are finished)."""
        out = {}
        for paradigm, name in (("base", "base"), ("new", "new"), ("all", "acc")):
            value = self.value(paradigm, method, dataset, seed)
            if value is not None:
                out[name] = value
        if "base" in out and "new" in out:
            out["hm"] = harmonic_mean(out["base"], out["new"])
        return out

    def open_world(self, method: str, dataset: str) -> dict[str, Entry]:
        """Per-dataset entries: base, new, hm (mean of per-seed HMs) and acc."""
        seeds = self.seeds(method, dataset, "base")
        per_seed = {s: self.open_world_seed(method, dataset, s) for s in seeds}
        return {
            name: self._entry({s: v[name] for s, v in per_seed.items() if name in v}, len(seeds))
            for name in ("base", "new", "hm", "acc")
        }

    def open_world_average(self, method: str, datasets: Sequence[str]) -> dict[str, Entry]:
        """Averages over ``datasets``: base, new, hm (mean of HMs), hm_of_means (HM of averages), acc.

        Empty (``stat`` None) unless every dataset has every expected seed.
        """
        seeds = self.seeds(method, datasets[0], "base") if datasets else []
        per_seed: dict[int, dict[str, float]] = {}
        complete = bool(seeds) and all(self.seeds(method, d, "base") == seeds for d in datasets)
        for seed in seeds if complete else []:
            rows = [self.open_world_seed(method, d, seed) for d in datasets]
            if not all(len(r) == 4 for r in rows):
                per_seed = {}
                break
            per_seed[seed] = {
                "base": float(np.mean([r["base"] for r in rows])),
                "new": float(np.mean([r["new"] for r in rows])),
                "hm": mean_of_hms([r["hm"] for r in rows]),
                "hm_of_means": hm_of_means([r["base"] for r in rows], [r["new"] for r in rows]),
                "acc": float(np.mean([r["acc"] for r in rows])),
            }
        return {
            name: self._entry({s: v[name] for s, v in per_seed.items()}, len(seeds))
            for name in OPEN_WORLD_METRICS
        }

    # ---- one accuracy per run: cross-dataset / domain generalisation ("xd"), few-shot ("fewshot<K>") ----
    def accuracy(self, paradigm: str, method: str, dataset: str) -> Entry:
        seeds = self.seeds(method, dataset, paradigm)
        found = {s: v for s in seeds if (v := self.value(paradigm, method, dataset, s)) is not None}
        return self._entry(found, len(seeds))

    def accuracy_average(self, paradigm: str, method: str, datasets: Sequence[str]) -> Entry:
        """Mean accuracy over ``datasets`` per seed, summarised over seeds; empty unless complete."""
        seeds = self.seeds(method, datasets[0], paradigm) if datasets else []
        per_seed: dict[int, float] = {}
        if seeds and all(self.seeds(method, d, paradigm) == seeds for d in datasets):
            for seed in seeds:
                vals = [self.value(paradigm, method, d, seed) for d in datasets]
                if any(v is None for v in vals):
                    per_seed = {}
                    break
                per_seed[seed] = float(np.mean(vals))
        return self._entry(per_seed, len(seeds))


def collect(jobs: Iterable[Job], keyword: str = "accuracy", ci95: bool = False) -> Results:
    """Read every step's log; unfinished or absent runs go to ``missing``, in run-list order."""
    results = Results(ci95=ci95)
    for job in jobs:
        for step in job.steps:
            paradigm, method, dataset, seed = step.key
            seeds = results.expected.setdefault((paradigm, method, dataset), [])
            if seed not in seeds:
                seeds.append(seed)
            value = step.result(keyword)
            if value is None:
                results.missing.append(step)
            else:
                results.values[step.key] = value
    return results
