"""Run lists: which script runs each paper table needs, as jobs of ordered steps.

A *step* is one invocation of a method script (``scripts/<method>/<paradigm>.sh``) together with the
``log.txt`` it writes and the line that marks that log finished; a *job* is the steps that depend on
each other (train on base classes, then evaluate new, then all) and therefore run in order on one
worker. The same run appears in several tables (MaPLe is in Tables 1, 4 and 5); since its folder is
the same, it is trained once and found complete afterwards.

Method labels are the paper's; ``METHODS`` says which script folder (and config, if not the script's
default) produces each. Dataset names in tables are the paper's; ``DATASETS`` maps them to our
``configs/datasets/<name>.yaml``. Any other dataset name (e.g. ``digits``) is used as-is.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools import layout
from tools.parse_test_res import TEST_END, TRAIN_END, parse_log

__all__ = [
    "REPO_ROOT",
    "DATASETS",
    "OPEN_WORLD_DATASETS",
    "XD_TARGETS",
    "DG_TARGETS",
    "Method",
    "METHODS",
    "TableDef",
    "TABLES",
    "Step",
    "Job",
    "config_name",
    "paper_name",
    "open_world_jobs",
    "transfer_jobs",
    "fewshot_jobs",
    "table_jobs",
    "add_plan_arguments",
    "jobs_from_args",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

DATASETS: dict[str, str] = {
    "ImageNet": "imagenet",
    "Caltech101": "caltech101",
    "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars",
    "Flowers102": "oxford_flowers",
    "Food101": "food101",
    "FGVCAircraft": "fgvc_aircraft",
    "SUN397": "sun397",
    "DTD": "dtd",
    "EuroSAT": "eurosat",
    "UCF101": "ucf101",
    "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet_sketch",
    "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
}
OPEN_WORLD_DATASETS = (
    "ImageNet",
    "Caltech101",
    "OxfordPets",
    "StanfordCars",
    "Flowers102",
    "Food101",
    "FGVCAircraft",
    "SUN397",
    "DTD",
    "EuroSAT",
    "UCF101",
)
XD_TARGETS = OPEN_WORLD_DATASETS[1:]
DG_TARGETS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
SOURCE = "ImageNet"


def config_name(dataset: str) -> str:
    """``configs/datasets/<name>.yaml`` stem of a paper dataset name; other names pass through."""
    return DATASETS.get(dataset, dataset)


def paper_name(dataset: str) -> str:
    """The paper's name of a dataset given either way (``eurosat`` -> ``EuroSAT``); others pass through."""
    by_config = {v: k for k, v in DATASETS.items()}
    return by_config.get(dataset, dataset)


@dataclass(frozen=True)
class Method:
    """How to produce one table row: a script folder, optionally another config and extra overrides."""

    label: str
    script_dir: str
    cfg: str | None = None
    opts: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    m.label: m
    for m in (
        Method("CLIP", "zsclip"),
        Method("CoOp", "coop"),
        Method("CoCoOp", "cocoop"),
        Method("IVLP", "ivlp"),
        Method("MaPLe", "maple"),
        Method("MaPLe†", "maple", cfg="vit_b16_c2_ep5_batch4_2ctx_dagger"),
        Method("BMIP", "bmip"),
        # BMIP as the paper describes it (PRESET paper, docs/BMIP.md); the paper's tables used "released".
        Method("BMIP-paper", "bmip", cfg="BMIP_ctx2_dp9_lr2_paper"),
        # BMIP is MaPLe plus the bi-directional interaction: Table 4's "MaPLe +BMIP" is the same model.
        Method("MaPLe+BMIP", "bmip"),
        Method("Addition", "bmip", cfg="BMIP_ablation_add"),
        Method("Attention", "bmip", cfg="BMIP_ablation_atten"),
        Method("Joint", "bmip", cfg="BMIP_ablation_joint"),
        Method("PromptSRC", "promptsrc"),
        Method("PromptSRC+BMIP", "promptsrc_bmip"),
        Method("CoPrompt", "coprompt"),
        Method("CoPrompt+BMIP", "coprompt_bmip"),
        # The field since MaPLe, part 2 (Table 7). Their scripts pick the releases' ImageNet configs
        # (vit_b16_ep5_imnet, vit_b16_imagenet) by dataset: tests/test_plan_configs.py.
        Method("MMA", "mma"),
        Method("MMA+BMIP", "mma_bmip"),
        Method("CLIP-LoRA", "clip_lora"),
        Method("MMRL", "mmrl"),
        Method("MMRL+BMIP", "mmrl_bmip"),
        # HiCroPL (ICCV 2025), bi-directional like BMIP; its scripts pick the ImageNet config for ImageNet.
        Method("HiCroPL", "hicropl"),
        # The field since MaPLe (Table 6): KgCoOp, TCP and DePT over our hosts.
        Method("KgCoOp", "kgcoop"),
        Method("TCP", "tcp"),
        Method("CoOp+DePT", "coop_dept"),
        Method("KgCoOp+DePT", "kgcoop_dept"),
        Method("MaPLe+DePT", "maple_dept"),
        Method("PromptSRC+DePT", "promptsrc_dept"),
        Method("BMIP+DePT", "bmip_dept"),
    )
}


@dataclass(frozen=True)
class TableDef:
    """One paper table: its kind (how numbers are derived), rows (methods) and datasets."""

    number: int
    title: str
    kind: str  # "open_world" (per dataset), "open_world_average", "base2new_average", or "transfer"
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    source: str | None = None  # transfer tables: the training dataset (also a row)
    # transfer tables: (row label, whether the source dataset is included) of each average row
    averages: tuple[tuple[str, bool], ...] = ()
    # open-world tables: the dataset average the published Average is compared with by default
    average_rule: str = "mean_of_hms"


TABLES: dict[int, TableDef] = {
    1: TableDef(
        1,
        "Open-world generalization (HM of base/new, Acc on all classes)",
        "open_world",
        ("CLIP", "CoOp", "CoCoOp", "MaPLe", "BMIP"),
        OPEN_WORLD_DATASETS,
    ),
    2: TableDef(
        2,
        "Cross-dataset transfer (prompts trained on ImageNet)",
        "transfer",
        ("CLIP", "CoOp", "CoCoOp", "MaPLe", "BMIP"),
        XD_TARGETS,
        source=SOURCE,
        averages=(("Average", False),),
    ),
    3: TableDef(
        3,
        "Domain generalization (prompts trained on ImageNet)",
        "transfer",
        ("CLIP", "CoOp", "CoCoOp", "MaPLe", "BMIP"),
        DG_TARGETS,
        source=SOURCE,
        averages=(("Average", True), ("OOD Average", False)),
    ),
    4: TableDef(
        4,
        "BMIP added to other methods (open-world, average over 11 datasets)",
        "open_world_average",
        ("CLIP", "MaPLe", "MaPLe+BMIP", "PromptSRC", "PromptSRC+BMIP", "CoPrompt", "CoPrompt+BMIP"),
        OPEN_WORLD_DATASETS,
    ),
    5: TableDef(
        5,
        "Aggregation functions (open-world, average over 11 datasets)",
        "open_world_average",
        ("IVLP", "CoCoOp", "MaPLe", "MaPLe†", "Addition", "Attention", "Joint", "BMIP"),
        OPEN_WORLD_DATASETS,
    ),
    # Not a BMIP-paper table: the methods since MaPLe, with their own papers' base-to-new numbers
    # (tools/paper_tables/README.md), whose Average is the HM of the averaged base and new accuracies.
    6: TableDef(
        6,
        "The field since MaPLe: KgCoOp, TCP, DePT (base-to-new; Acc on all classes)",
        "open_world",
        ("KgCoOp", "TCP", "CoOp+DePT", "KgCoOp+DePT", "MaPLe+DePT", "PromptSRC+DePT", "BMIP+DePT"),
        OPEN_WORLD_DATASETS,
        average_rule="hm_of_means",
    ),
    # Not a BMIP-paper table: the base-to-new averages the later methods' own papers publish.
    7: TableDef(
        7,
        "The field since MaPLe, part 2: adapters, representation tokens, LoRA, HiCroPL (base-to-new, 11 datasets)",
        "base2new_average",
        ("CLIP", "MaPLe", "MMA", "MMA+BMIP", "MMRL", "MMRL+BMIP", "CLIP-LoRA", "HiCroPL"),
        OPEN_WORLD_DATASETS,
    ),
}


@dataclass(frozen=True)
class Step:
    """One script invocation and the log that proves it finished.

    ``paradigm`` names the measurement the log holds: ``base``/``new``/``all`` (open world),
    ``xd`` (cross-dataset and domain generalisation, the source dataset included) or ``fewshot<K>``.
    """

    paradigm: str
    method: str
    dataset: str
    seed: int
    command: tuple[str, ...]
    log: Path
    end_signal: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.paradigm, self.method, self.dataset, self.seed)

    def result(self, keyword: str = "accuracy") -> float | None:
        """The metric this step's log reports, or None while the run is missing or unfinished."""
        return parse_log(self.log, self.end_signal, (keyword,)).get(keyword)

    def done(self) -> bool:
        return self.result() is not None


@dataclass(frozen=True)
class Job:
    """Steps that must run in order (later ones load what the first one trained)."""

    name: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def done(self) -> bool:
        return all(step.done() for step in self.steps)


def _shots(opts: Sequence[str], default: int = 16) -> int:
    """The shots lib.sh will use: the last ``DATASET.NUM_SHOTS`` override, else ``default``."""
    shots = default
    for key, value in zip(opts[::2], opts[1::2]):
        if key == "DATASET.NUM_SHOTS":
            shots = int(value)
    return shots


class _Planner:
    """Turns (method, script, arguments) into a command; the script itself says its trainer and config."""

    def __init__(self, output: Path, opts: Sequence[str], scripts_root: Path, methods: Mapping[str, Method]):
        if len(opts) % 2:
            raise ValueError(f"config overrides must be KEY VALUE pairs, got {list(opts)}")
        self.output = Path(output).resolve()
        self.opts = tuple(opts)
        self.shots = _shots(self.opts)
        self.scripts_root = Path(scripts_root)
        self.methods = methods

    def method(self, label: str) -> Method:
        if label not in self.methods:
            raise KeyError(f"unknown method {label!r}; known: {', '.join(self.methods)}")
        return self.methods[label]

    def dataset_dir(self, method: Method, dataset: str) -> str:
        """``dataset``'s name in the run folders (own image folders carry a hash of their path)."""
        return layout.dataset_dir(self.scripts_root / "lib.sh", dataset, (*method.opts, *self.opts))

    def has_script(self, method: Method, script: str) -> bool:
        return (self.scripts_root / method.script_dir / f"{script}.sh").is_file()

    def place(self, method: Method, folder: Path) -> Path:
        """Where the script puts a run of ``method`` with this planner's overrides (lib.sh's lib_place)."""
        return layout.place(folder, (*method.opts, *self.opts))

    def call(
        self, method: Method, script: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], layout.ScriptInfo]:
        """Command line and environment of one script call, and what that call sets up."""
        path = self.scripts_root / method.script_dir / f"{script}.sh"
        full_env = {"OUTPUT": str(self.output), **(env or {})}
        if method.cfg:
            full_env["CFG"] = method.cfg
        arguments = (*args, *method.opts, *self.opts)
        info = layout.read_script(path, arguments, full_env)
        return ("bash", str(info.path), *arguments), tuple(sorted(full_env.items())), info


def _end_signal(info: layout.ScriptInfo) -> str:
    """A zero-shot script only evaluates, so its log ends with a result block, not ``Finish training``."""
    return TEST_END if info.zero_shot else TRAIN_END


def open_world_jobs(
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    output: Path,
    opts: Sequence[str] = (),
    scripts_root: Path = REPO_ROOT / "scripts",
    method_table: Mapping[str, Method] = METHODS,
) -> list[Job]:
    """Train on base classes, evaluate base (end of training), new and all classes; one job per seed.

    Zero-shot methods (``lib_setup ... -``) are deterministic and run for the first seed only.
    """
    p = _Planner(output, opts, scripts_root, method_table)
    jobs = []
    for label in methods:
        method = p.method(label)
        for dataset in datasets:
            name = config_name(dataset)
            folder_name = p.dataset_dir(method, name)
            for seed in seeds:
                args = (name, str(seed))
                cmd, env, info = p.call(method, "base2new_train", args)
                folder = layout.base2new_dir(
                    p.output, "train_base", folder_name, p.shots, info.trainer, info.cfg, seed
                )
                folder = p.place(method, folder)
                steps = [Step("base", label, dataset, seed, cmd, folder / "log.txt", _end_signal(info), env)]
                for sub in ("new", "all"):
                    cmd, env, test = p.call(method, "base2new_test", args, {"SUBS": sub})
                    folder = layout.base2new_dir(
                        p.output, f"test_{sub}", folder_name, p.shots, test.trainer, test.cfg, seed
                    )
                    folder = p.place(method, folder)
                    steps.append(Step(sub, label, dataset, seed, cmd, folder / "log.txt", TEST_END, env))
                jobs.append(Job(f"base2new {label} {dataset} seed{seed}", tuple(steps)))
                if info.zero_shot:  # deterministic: one run is enough
                    break
    return jobs


def transfer_jobs(
    methods: Sequence[str],
    targets: Sequence[str],
    seeds: Sequence[int],
    output: Path,
    source: str = SOURCE,
    opts: Sequence[str] = (),
    scripts_root: Path = REPO_ROOT / "scripts",
    method_table: Mapping[str, Method] = METHODS,
) -> list[Job]:
    """Train on all classes of ``source``, then evaluate on each target; one job per method and seed.

    The source accuracy is the final test of the training run. Targets that are ImageNet variants use
    ``dg_test.sh``, others ``xd_test.sh``; both write the same folder pattern. A zero-shot method (a
    script folder with ``zeroshot.sh`` and no ``xd_test.sh``) is evaluated once per dataset, source
    included, under the first seed.
    """
    p = _Planner(output, opts, scripts_root, method_table)
    src = config_name(source)
    jobs = []
    for label in methods:
        method = p.method(label)
        if not p.has_script(method, "xd_test") and p.has_script(method, "zeroshot"):
            steps = []
            for dataset in (source, *targets):
                cmd, env, info = p.call(method, "zeroshot", (config_name(dataset),))
                folder = layout.zeroshot_dir(p.output, config_name(dataset), info.trainer, info.cfg)
                folder = p.place(method, folder)
                steps.append(Step("xd", label, dataset, seeds[0], cmd, folder / "log.txt", TEST_END, env))
            jobs.append(Job(f"zero-shot {label} {source} + {len(targets)} targets", tuple(steps)))
            continue
        for seed in seeds:
            cmd, env, info = p.call(method, "xd_train", (src, str(seed)), {"SOURCE": src})
            folder = layout.xd_train_dir(p.output, src, info.trainer, info.cfg, p.shots, seed)
            folder = p.place(method, folder)
            steps = [Step("xd", label, source, seed, cmd, folder / "log.txt", _end_signal(info), env)]
            for target in targets:
                script = "dg_test" if target in DG_TARGETS else "xd_test"
                cmd, env, info = p.call(method, script, (config_name(target), str(seed)), {"SOURCE": src})
                folder = layout.xd_test_dir(
                    p.output, config_name(target), info.trainer, info.cfg, p.shots, seed
                )
                folder = p.place(method, folder)
                steps.append(Step("xd", label, target, seed, cmd, folder / "log.txt", TEST_END, env))
            jobs.append(Job(f"transfer {label} {source} -> {len(targets)} targets seed{seed}", tuple(steps)))
    return jobs


def fewshot_jobs(
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    shots: Sequence[int],
    output: Path,
    opts: Sequence[str] = (),
    scripts_root: Path = REPO_ROOT / "scripts",
    method_table: Mapping[str, Method] = METHODS,
) -> list[Job]:
    """CoOp-style few-shot: train and test on all classes with K shots per class (paradigm ``fewshot<K>``)."""
    p = _Planner(output, opts, scripts_root, method_table)
    jobs = []
    for label in methods:
        method = p.method(label)
        for dataset in datasets:
            name = config_name(dataset)
            folder_name = p.dataset_dir(method, name)
            for k in shots:
                for seed in seeds:
                    cmd, env, info = p.call(method, "fewshot", (name, str(seed), str(k)))
                    folder = layout.fewshot_dir(p.output, folder_name, k, info.trainer, info.cfg, seed)
                    folder = p.place(method, folder)
                    step = Step(
                        f"fewshot{k}", label, dataset, seed, cmd, folder / "log.txt", _end_signal(info), env
                    )
                    jobs.append(Job(f"fewshot {label} {dataset} {k}-shot seed{seed}", (step,)))
    return jobs


def table_jobs(
    table: TableDef,
    seeds: Sequence[int],
    output: Path,
    opts: Sequence[str] = (),
    methods: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    scripts_root: Path = REPO_ROOT / "scripts",
    method_table: Mapping[str, Method] = METHODS,
) -> list[Job]:
    """The complete run list of one paper table (optionally restricted to some methods/datasets)."""
    methods = tuple(methods or table.methods)
    datasets = tuple(paper_name(d) for d in datasets or table.datasets)
    if table.kind == "transfer":
        return transfer_jobs(
            methods, datasets, seeds, output, table.source or SOURCE, opts, scripts_root, method_table
        )
    return open_world_jobs(methods, datasets, seeds, output, opts, scripts_root, method_table)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define a run list (shared by ``tools.tables`` and ``tools.sweep``)."""
    parser.add_argument("--table", type=int, choices=sorted(TABLES), help="paper table number")
    parser.add_argument(
        "--fewshot",
        nargs="+",
        type=int,
        default=None,
        metavar="K",
        help="instead of a paper table: CoOp-style few-shot runs with K shots (needs --methods, --datasets)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, help="subset of the table's methods (paper labels)"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="paper dataset names or config names (e.g. digits); default: the table's",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(os.environ.get("OUTPUT", REPO_ROOT / "output")),
        help="output root of the method scripts (their OUTPUT; default $OUTPUT or ./output)",
    )
    parser.add_argument("--scripts-root", type=Path, default=REPO_ROOT / "scripts", help=argparse.SUPPRESS)
    parser.add_argument(
        "--opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides appended to every script call, e.g. OPTIM.MAX_EPOCH 1",
    )


def jobs_from_args(args: argparse.Namespace) -> list[Job]:
    """The run list described by ``add_plan_arguments`` options: a paper table's, or a few-shot one."""
    if (args.table is None) == (args.fewshot is None):
        raise SystemExit("give exactly one of --table N or --fewshot K [K ...]")
    if args.fewshot is not None:
        if not args.methods or not args.datasets:
            raise SystemExit(
                "--fewshot needs --methods and --datasets (there is no few-shot table in the paper)"
            )
        datasets = [paper_name(d) for d in args.datasets]
        return fewshot_jobs(
            args.methods, datasets, args.seeds, args.fewshot, args.output, args.opts, args.scripts_root
        )
    return table_jobs(
        TABLES[args.table], args.seeds, args.output, args.opts, args.methods, args.datasets, args.scripts_root
    )
