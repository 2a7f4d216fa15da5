"""Find the runs an output folder holds, say what each one is, and keep only those that may be averaged.

Every ``log.txt`` under the folder is one run. What it is comes from the arguments and config the log
prints (``tools.parse_test_res.read_log_header``), so any folder layout works, the method scripts',
a hand-made one or an official release's (Dassl prints the same blocks):

- paradigm: ``base`` / ``new`` from ``DATASET.SUBSAMPLE_CLASSES``; all classes is ``all`` inside a
  ``base2new`` folder, ``fewshot<K>`` inside a ``fewshot`` folder, else ``xd`` (cross-dataset and
  domain generalisation: the source's training run and every target's evaluation);
- method: the paper label whose script (``tools.plan.METHODS``) sets up the same trainer and config
  file for that dataset and paradigm, else ``TRAINER (config)``;
- dataset: the paper's name of the dataset config file (``tools.plan.paper_name``);
- a config fingerprint (``config_fingerprint``): runs of one row are averaged only when it agrees.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tools import layout, plan
from tools.parse_test_res import TEST_END, TRAIN_END, parse_log, read_log_header
from tools.results import Results
from tools.run_record import IGNORED

__all__ = ["Run", "Unusable", "Collection", "config_fingerprint", "method_label", "read_run", "collect_runs"]

# The seed (it differs between the seeds of one experiment) and the keys train.py's run record ignores
# (where files live, how much is printed, which device runs it): never in the hash.
FINGERPRINT_EXCLUDED = ("SEED", *sorted(IGNORED))
PAPER_BACKBONE = "ViT-B/16"


def config_fingerprint(run_dir: Path, config: dict[str, str] | None = None) -> str:
    """A short hash of what changes a run's results: the printed config minus ``FINGERPRINT_EXCLUDED``.

    The one place that decides whether two logged runs share a config. It reads the printed config, not
    ``run.json`` (whose fingerprint includes the seed), so logs of an official release's runs group too.
    """
    if config is None:
        config = read_log_header(Path(run_dir) / "log.txt")[1]
    kept = sorted((k, v) for k, v in config.items() if k not in FINGERPRINT_EXCLUDED)
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Run:
    """One ``log.txt`` and what it measured."""

    folder: Path
    method: str  # the paper label, with ``[backbone]`` when the backbone is not the paper's
    dataset: str
    paradigm: str
    backbone: str
    seed: int
    fingerprint: str
    accuracy: float | None  # None: the log never reached its end line
    config: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    trains: bool = False  # a training run (has curves), not an evaluation of a trained model

    @property
    def row(self) -> tuple[str, str, str]:
        return (self.method, self.dataset, self.paradigm)


@dataclass(frozen=True)
class Unusable:
    """A folder the report could not use, and why."""

    folder: Path
    reason: str


def _stem(path: str) -> str:
    return Path(path).stem if path and path != "None" else ""


def _paradigm(config: dict[str, str], where: Path) -> str:
    """``where``: the run folder relative to the folder being read (its own parents do not count)."""
    subsample = config.get("DATASET.SUBSAMPLE_CLASSES", "all")
    if subsample in ("base", "new"):
        return subsample
    parts = set(where.parts)
    if "fewshot" in parts:
        return f"fewshot{config.get('DATASET.NUM_SHOTS', '?')}"
    return "all" if "base2new" in parts else "xd"


_SCRIPT_OF = {"base": "base2new_train", "new": "base2new_train", "all": "base2new_train", "xd": "xd_train"}


def _script_setup(method: plan.Method, script: str, dataset_stem: str) -> tuple[str, str] | None:
    path = plan.REPO_ROOT / "scripts" / method.script_dir / f"{script}.sh"
    if not path.is_file():
        return None
    env = {"CFG": method.cfg} if method.cfg else {}
    info = layout.read_script(path, (dataset_stem, "1", "16"), env)
    return info.trainer, info.cfg


@functools.lru_cache(maxsize=1024)
def method_label(trainer: str, cfg: str, dataset_stem: str, paradigm: str) -> str:
    """The paper label of the method whose script runs ``trainer`` with config ``cfg`` here.

    Scripts are asked (``tools.layout.read_script``) because the config can depend on the dataset
    (CoOp on ImageNet); the first label in ``tools.plan.METHODS`` order wins (BMIP before MaPLe+BMIP).
    """
    script = "fewshot" if paradigm.startswith("fewshot") else _SCRIPT_OF[paradigm]
    for method in plan.METHODS.values():
        for name in (script, "zeroshot"):
            setup = _script_setup(method, name, dataset_stem)
            if setup is not None and setup[0] != trainer:
                break  # another trainer: no need to ask with this dataset
            if setup == (trainer, cfg):
                return method.label
    return f"{trainer} ({cfg})" if cfg else trainer


def read_run(log: Path, root: Path) -> Run | Unusable:
    """What one ``log.txt`` under ``root`` holds, or why it cannot be used."""
    folder = log.parent
    args, config = read_log_header(log)
    if not config:
        return Unusable(folder, "log.txt prints no config (** Config ** block): not a train.py log")
    try:
        seed = int(config.get("SEED", args.get("seed", "")))
    except ValueError:
        return Unusable(folder, f"SEED {config.get('SEED')!r} in the printed config is not an integer")
    eval_only = args.get("eval_only") == "True"
    paradigm = _paradigm(config, folder.relative_to(root))
    dataset_stem = _stem(args.get("dataset_config_file", "")) or config.get("DATASET.NAME", "?")
    trainer = config.get("TRAINER.NAME") or args.get("trainer", "?")
    result = parse_log(log, TEST_END if eval_only else TRAIN_END)
    backbone = config.get("MODEL.BACKBONE.NAME", "?")
    return Run(
        folder=folder,
        method=row_method(
            method_label(trainer, _stem(args.get("config_file", "")), dataset_stem, paradigm), backbone
        ),
        dataset=plan.paper_name(dataset_stem),
        paradigm=paradigm,
        backbone=backbone,
        seed=seed,
        fingerprint=config_fingerprint(folder, config),
        accuracy=result.get("accuracy"),
        config=config,
        trains=not eval_only,
    )


def _differing_keys(a: dict[str, str], b: dict[str, str]) -> list[str]:
    keys = sorted(k for k in set(a) | set(b) if k not in FINGERPRINT_EXCLUDED and a.get(k) != b.get(k))
    return [f"{k}={a.get(k, '-')} vs {b.get(k, '-')}" for k in keys]


@dataclass
class Collection:
    """The usable runs of a folder, grouped into rows, and the folders left out with their reason."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    unusable: list[Unusable] = field(default_factory=list)

    def results(self, ci95: bool = False) -> Results:
        """The runs as ``tools.results.Results``; a paradigm lacking a seed its siblings have expects it."""
        res = Results(ci95=ci95)
        families: dict[tuple[str, str, str], set[int]] = {}
        for run in self.runs:
            res.values[(run.paradigm, run.method, run.dataset, run.seed)] = run.accuracy
            family = "open" if run.paradigm in OPEN_WORLD else run.paradigm
            families.setdefault((family, run.method, run.dataset), set()).add(run.seed)
        for (family, method, dataset), seeds in families.items():
            for paradigm in OPEN_WORLD if family == "open" else (family,):
                res.expected[(paradigm, method, dataset)] = sorted(seeds)
        return res

    def missing(self) -> list[Unusable]:
        """Runs a row's siblings imply but the folder lacks (a seed trained but never tested on new classes)."""
        res = self.results()
        out = []
        for (paradigm, method, dataset), seeds in sorted(res.expected.items()):
            for seed in seeds:
                if res.value(paradigm, method, dataset, seed) is None:
                    sibling = next(
                        r.folder
                        for r in self.runs
                        if (r.method, r.dataset, r.seed) == (method, dataset, seed)
                    )
                    out.append(
                        Unusable(
                            sibling,
                            f"missing: no {paradigm} run of {method} {dataset} seed{seed} "
                            "(the folder named is a sibling run of that seed)",
                        )
                    )
        return out


def row_method(method: str, backbone: str) -> str:
    """A row's method label: the paper label, with the backbone when it is not the paper's."""
    return method if backbone == PAPER_BACKBONE else f"{method} [{backbone}]"


OPEN_WORLD = ("base", "new", "all")


def _select(runs: Iterable[Run], collection: Collection) -> None:
    """Per row, keep the seeds of the fingerprint most seeds share; list the rest as mixed-config."""
    by_row: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        by_row.setdefault(run.row, []).append(run)
    for _, members in sorted(by_row.items()):
        counts = Counter(r.fingerprint for r in members)
        # most seeds first; a tie goes to the config of the lowest seed, so the choice is stable
        chosen = max(
            counts, key=lambda fp: (counts[fp], -min(r.seed for r in members if r.fingerprint == fp))
        )
        reference = next(r for r in sorted(members, key=lambda r: r.seed) if r.fingerprint == chosen)
        seen: set[int] = set()
        for run in sorted(members, key=lambda r: (r.seed, str(r.folder))):
            if run.fingerprint != chosen:
                diff = "; ".join(_differing_keys(run.config, reference.config)[:4])
                collection.unusable.append(
                    Unusable(
                        run.folder,
                        f"mixed config: {run.method} {run.dataset} {run.paradigm} seed{run.seed} has config "
                        f"{run.fingerprint}, the row's is {chosen} ({reference.folder}): {diff}",
                    )
                )
            elif run.seed in seen:
                collection.unusable.append(Unusable(run.folder, f"duplicate of seed{run.seed} (same config)"))
            else:
                seen.add(run.seed)
                collection.runs.append(run)


def collect_runs(root: str | Path) -> Collection:
    """Every run under ``root``: finished ones of one config per row in ``runs``, the rest in ``unusable``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"report: {root} is not a directory (expected an output folder with log.txt files)"
        )
    collection = Collection(root)
    finished = []
    for log in sorted(root.rglob("log.txt")):
        found = read_run(log, root)
        if isinstance(found, Unusable):
            collection.unusable.append(found)
        elif found.accuracy is None:
            end = TRAIN_END if found.trains else TEST_END
            collection.unusable.append(Unusable(found.folder, f"unfinished: the log never reached {end!r}"))
        else:
            finished.append(found)
    _select(finished, collection)
    for seed_dir in sorted(p for p in root.rglob("seed*") if p.is_dir() and not (p / "log.txt").exists()):
        if seed_dir.name[4:].isdigit() and not any(seed_dir.glob("*/log.txt")):
            collection.unusable.append(Unusable(seed_dir, "missing: seed folder without log.txt"))
    return collection
