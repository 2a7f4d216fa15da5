"""Benchmark command: ``python -m bench.run --backbone random:ViT-B/16 --trainers MaPLe BMIP``.

Per trainer it reports, as medians over ``--repeats`` runs after ``--warmup`` runs, with the runs of all
configurations interleaved (a noisy machine then slows every configuration alike):

* ``train``: one training step (forward, backward, optimizer) at each ``--classes`` count, batch
  ``--batch``, with text trimming on and, at the last count, also off: the "before" (``--no-before``
  skips every before);
* ``eval``: one evaluation batch of ``--eval-batch`` images at each ``--eval-classes`` count with the
  class features cached (steady state) and as the official code does it (untrimmed text tower for
  every batch); images/s of both;
* ``text``: the class-side text tower (forward, and forward + backward) on EuroSAT's class prompts at
  each ``--classes`` count, trimmed vs 77 tokens, and its time per class;
* ``memory``: peak memory of a training step at the last ``--classes`` count: on CPU the resident set
  size of a fresh child process per trainer, sampled every millisecond during two steps (the model
  build's own transient peak is excluded); ``torch.cuda.max_memory_allocated`` on GPU.

On GPU it also counts FLOPs of the training step and reports TFLOP/s against ``--peak-tflops`` (or a
known peak of the device). Writes ``<out>.json`` (every raw time) and ``<out>.txt`` (the table). On CPU
the times are the process's CPU seconds (``--wall`` for wall clock), see :class:`Clock`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.models import bench_cfg, build_backbone, build_prompted, class_names

SECTIONS = ("train", "eval", "text", "memory")
# Dense peak TFLOP/s (fp32 non-tensor-core, bf16/fp16 tensor core) of common devices, by name fragment.
DEVICE_PEAKS = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40": (90.5, 362.0)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="random:ViT-B/16", help="CLIP backbone (random:tiny for a quick look)")
    p.add_argument("--trainers", nargs="+", default=["MaPLe", "BMIP"], help="first one is the ratio reference")
    p.add_argument("--classes", nargs="+", type=int, default=[5, 50], help="class counts of the train step")
    p.add_argument("--batch", type=int, default=4, help="training batch size")
    p.add_argument("--eval-classes", nargs="+", type=int, default=[10, 1000])
    p.add_argument("--eval-batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration first")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--no-before", action="store_true", help="skip the un-optimised 'before' configurations")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (0: torch's default)")
    p.add_argument("--wall", action="store_true", help="on CPU, time wall clock instead of process CPU time")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off", help="autocast on GPU")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for the utilisation column")
    p.add_argument("--out", default="output/bench/bench", help="writes <out>.json and <out>.txt")
    p.add_argument("--opts", nargs="*", default=[], help="config KEY VALUE pairs (as train.py's opts)")
    p.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    return p


# ---- timing --------------------------------------------------------------------------------------------
class Clock:
    """Intervals of the measured work. On GPU: wall time after a device sync (kernels are asynchronous).
    On CPU: the process's CPU time (all threads), unless ``WALL`` is set - on a shared machine other
    processes stretch wall time by whatever they happen to run, while the CPU time of the work itself
    stays put (with one intra-op thread it also contains no OpenMP spin-waiting)."""

    WALL = False

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.last = self.now()

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.perf_counter() if self.WALL else time.process_time()

    def lap(self) -> float:
        now = self.now()
        elapsed, self.last = now - self.last, now
        return elapsed


def _autocast(device: torch.device, amp: str) -> Any:
    if amp == "off" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def train_step(model: Any, images: torch.Tensor, labels: torch.Tensor, optim: torch.optim.Optimizer,
               amp: str) -> dict[str, float]:
    """One step as the trainers run it; seconds of forward (incl. loss), backward and optimizer step."""
    model.train()
    clock = Clock(images.device)
    optim.zero_grad(set_to_none=True)
    with _autocast(images.device, amp):
        loss = F.cross_entropy(model(images), labels)
    forward = clock.lap()
    loss.backward()
    backward = clock.lap()
    optim.step()
    return {"forward": forward, "backward": backward, "optimizer": clock.lap()}


def eval_batch(model: Any, images: torch.Tensor, amp: str) -> dict[str, float]:
    model.eval()
    clock = Clock(images.device)
    with torch.no_grad(), _autocast(images.device, amp):
        model(images)
    return {"batch": clock.lap()}


def text_tower(model: Any, backward: bool, amp: str) -> dict[str, float]:
    """Class-side features of the current label space (the prompt learner's plan, hooks and all)."""
    model.train()
    clock = Clock(model.token_ids.device)
    with _autocast(model.token_ids.device, amp), torch.set_grad_enabled(backward):
        features = model.encode_text(model.prompt_learner())
        if backward:
            features.sum().backward()
    elapsed = clock.lap()
    model.zero_grad(set_to_none=True)
    return {"fwd_bwd" if backward else "fwd": elapsed}


def _switch(model: Any, trim: bool, cache: bool) -> None:
    model.clip.trim_text = trim
    model.cache_text = cache
    model.invalidate_text_cache()


# ---- cases -----------------------------------------------------------------------------------------------
class Case:
    """One configuration to time: a name, how to prepare the model, and the timed call."""

    def __init__(self, section: str, trainer: str, key: dict[str, Any], prepare: Callable[[], None],
                 run: Callable[[], dict[str, float]]) -> None:
        self.section, self.trainer, self.key = section, trainer, key
        self.prepare, self.run = prepare, run
        self.samples: list[dict[str, float]] = []

    def medians(self) -> dict[str, float]:
        parts = {k: statistics.median(s[k] for s in self.samples) for k in self.samples[0]}
        if self.section == "train":
            parts["step"] = statistics.median(sum(s.values()) for s in self.samples)
        return parts


def build_cases(args: argparse.Namespace, models: dict[str, Any], device: torch.device) -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    res = next(iter(models.values())).clip.image_resolution
    variants = [True] if args.no_before else [True, False]  # optimised, then the official 'before'
    cases: list[Case] = []
    for trainer, model in models.items():
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.SGD(params, lr=1e-4, momentum=0.9)  # the configs' optimiser (lr irrelevant here)
        if "train" in args.sections:
            images = torch.randn(args.batch, 3, res, res, generator=gen).to(device)
            for n_cls in args.classes:
                labels = torch.arange(args.batch, device=device) % n_cls
                for trim in variants if n_cls == args.classes[-1] else [True]:
                    def prepare(m=model, n=n_cls, t=trim) -> None:
                        m.set_classnames(class_names(n))
                        _switch(m, trim=t, cache=True)
                    cases.append(Case("train", trainer, {"classes": n_cls, "trim": trim}, prepare,
                                      lambda m=model, i=images, y=labels, o=optim: train_step(m, i, y, o, args.amp)))
        if "eval" in args.sections:
            images = torch.randn(args.eval_batch, 3, res, res, generator=gen).to(device)
            for n_cls in args.eval_classes:
                for optimised in variants:
                    def prepare(m=model, n=n_cls, o=optimised, i=images) -> None:
                        m.set_classnames(class_names(n))
                        _switch(m, trim=o, cache=o)
                        if o:
                            eval_batch(m, i[:1], args.amp)  # fills the cache: the steady state of a test pass
                    mode = "cached" if optimised else "recompute"
                    cases.append(Case("eval", trainer, {"classes": n_cls, "mode": mode}, prepare,
                                      lambda m=model, i=images: eval_batch(m, i, args.amp)))
        if "text" in args.sections:
            for n_cls in args.classes:
                for backward in (False, True):
                    for trim in variants:
                        def prepare(m=model, n=n_cls, t=trim) -> None:
                            m.set_classnames(class_names(n))
                            _switch(m, trim=t, cache=False)
                        cases.append(Case("text", trainer, {"classes": n_cls, "trim": trim, "backward": backward},
                                          prepare, lambda m=model, b=backward: text_tower(m, b, args.amp)))
    return cases


def run_cases(cases: list[Case], warmup: int, repeats: int) -> None:
    """Warm-up every case, then ``repeats`` rounds in which every case runs once (interleaved)."""
    for case in cases:
        case.prepare()
        for _ in range(warmup):
            case.run()
    for r in range(repeats):
        for case in cases:
            case.prepare()
            case.samples.append(case.run())
        print(f"round {r + 1}/{repeats} done", flush=True)


# ---- memory, FLOPs ------------------------------------------------------------------------------------------
def _train_models(args: argparse.Namespace, device: torch.device, names: Sequence[str]) -> dict[str, Any]:
    cfg = bench_cfg(args.backbone, args.opts)
    backbone = build_backbone(args.backbone, device)
    return {name: build_prompted(name, cfg, backbone, class_names(args.classes[0])) for name in names}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(args: argparse.Namespace, device: torch.device) -> None:
    """In a fresh process: resident memory (MiB) before and at the peak of two training steps of one trainer."""
    model = _train_models(args, device, [args.memory_child])[args.memory_child]
    n_cls = args.classes[-1]
    model.set_classnames(class_names(n_cls))
    res = model.clip.image_resolution
    images, labels = torch.randn(args.batch, 3, res, res), torch.arange(args.batch) % n_cls
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    gc.collect()
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            peak[0] = max(peak[0], _rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(2):
        train_step(model, images, labels, optim, "off")
    done.set()
    sampler.join()
    print(json.dumps({"before_mib": before, "peak_mib": max(peak[0], _rss_mib())}))


def measure_memory(args: argparse.Namespace, models: dict[str, Any], device: torch.device) -> dict[str, dict]:
    n_cls = args.classes[-1]
    result: dict[str, dict] = {}
    for trainer, model in models.items():
        if device.type == "cuda":
            model.set_classnames(class_names(n_cls))
            _switch(model, trim=True, cache=True)
            res = model.clip.image_resolution
            images = torch.randn(args.batch, 3, res, res, device=device)
            labels = torch.arange(args.batch, device=device) % n_cls
            optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            train_step(model, images, labels, optim, args.amp)
            peak = torch.cuda.max_memory_allocated()
            result[trainer] = {"classes": n_cls, "peak_mib": peak / 2**20, "step_extra_mib": (peak - base) / 2**20}
            continue
        argv = [sys.executable, "-m", "bench.run", "--memory-child", trainer, "--backbone", args.backbone,
                "--batch", str(args.batch), "--classes", str(n_cls), "--device", "cpu",
                "--threads", str(args.threads), "--opts", *args.opts]
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"memory measurement of {trainer} failed:\n{out.stderr[-2000:]}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        result[trainer] = {"classes": n_cls, "peak_rss_mib": child["peak_mib"],
                           "step_extra_rss_mib": child["peak_mib"] - child["before_mib"]}
    return result


def count_flops(model: Any, n_cls: int, args: argparse.Namespace, device: torch.device) -> float:
    """FLOPs of one training step (forward + backward) at ``n_cls`` classes, optimisations on."""
    model.set_classnames(class_names(n_cls))
    _switch(model, trim=True, cache=True)
    res = model.clip.image_resolution
    images = torch.randn(args.batch, 3, res, res, device=device)
    labels = torch.arange(args.batch, device=device) % n_cls
    model.train()
    with FlopCounterMode(display=False) as counter, _autocast(device, args.amp):
        F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def device_peak(args: argparse.Namespace, device: torch.device) -> Optional[float]:
    if args.peak_tflops > 0:
        return args.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (fp32, half) in DEVICE_PEAKS.items():
        if fragment in name:
            return fp32 if args.amp == "off" else half
    return None


# ---- report ---------------------------------------------------------------------------------------------------
def _find(cases: list[Case], section: str, trainer: str, **key: Any) -> Optional[Case]:
    for case in cases:
        if case.section == section and case.trainer == trainer and all(case.key[k] == v for k, v in key.items()):
            return case
    return None


def summarise(args: argparse.Namespace, cases: list[Case], memory: dict, flops: dict[str, float],
              peak: Optional[float]) -> dict[str, Any]:
    """Medians per case plus the ratios the acceptance criteria are stated in (all from this run)."""
    rows = [{"section": c.section, "trainer": c.trainer, **c.key, "median_s": c.medians(),
             "samples_s": c.samples} for c in cases]
    ratios: dict[str, float] = {}
    ref = args.trainers[0]
    for trainer in args.trainers:
        for n in args.classes:
            on, off = _find(cases, "train", trainer, classes=n, trim=True), _find(cases, "train", trainer, classes=n, trim=False)
            if on and off:
                ratios[f"train {trainer} {n} cls: untrimmed / trimmed"] = off.medians()["step"] / on.medians()["step"]
            base = _find(cases, "train", ref, classes=n, trim=True)
            if trainer != ref and on and base:
                ratios[f"train {n} cls: {trainer} / {ref}"] = on.medians()["step"] / base.medians()["step"]
        for n in args.eval_classes:
            cached = _find(cases, "eval", trainer, classes=n, mode="cached")
            recompute = _find(cases, "eval", trainer, classes=n, mode="recompute")
            if cached and recompute:
                ratios[f"eval {trainer} {n} cls: cached / recompute images/s"] = (
                    recompute.medians()["batch"] / cached.medians()["batch"])
            base = _find(cases, "eval", ref, classes=n, mode="cached")
            if trainer != ref and cached and base:
                ratios[f"eval {n} cls: {trainer} / {ref} per batch"] = cached.medians()["batch"] / base.medians()["batch"]
        for n in args.classes:
            for backward, part in ((False, "fwd"), (True, "fwd_bwd")):
                on = _find(cases, "text", trainer, classes=n, trim=True, backward=backward)
                off = _find(cases, "text", trainer, classes=n, trim=False, backward=backward)
                if on and off:
                    ratios[f"text {trainer} {n} cls {part}: 77 tokens / trimmed"] = off.medians()[part] / on.medians()[part]
    if len(memory) > 1 and ref in memory:
        key = "peak_mib" if "peak_mib" in memory[ref] else "peak_rss_mib"
        for trainer in args.trainers[1:]:
            if trainer in memory:
                ratios[f"memory {trainer} / {ref} peak"] = memory[trainer][key] / memory[ref][key]
    throughput = {}
    for trainer, total in flops.items():
        step = _find(cases, "train", trainer, classes=args.classes[-1], trim=True)
        if step:
            achieved = total / step.medians()["step"] / 1e12
            throughput[trainer] = {"tflop_per_step": total / 1e12, "tflops": achieved,
                                   "of_peak": achieved / peak if peak else None}
    return {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cases": rows, "ratios": ratios, "memory": memory, "flops": throughput}


def table(summary: dict[str, Any]) -> str:
    args = summary["args"]
    clock = "wall" if args["device"] != "cpu" or args["wall"] else "process CPU"
    lines = [f"backbone {args['backbone']}  device {args['device']}  threads {summary['threads']}  "
             f"repeats {args['repeats']} (medians of {clock} seconds)", ""]
    lines.append(f"{'section':<7} {'trainer':<12} {'configuration':<34} {'median':>9}  parts / throughput")
    for row in summary["cases"]:
        m = row["median_s"]
        if row["section"] == "train":
            config, total = f"{row['classes']} cls, trim {'on' if row['trim'] else 'off'}", m["step"]
            detail = f"fwd {m['forward']:.3f}  bwd {m['backward']:.3f}  opt {m['optimizer']:.4f}"
        elif row["section"] == "eval":
            config, total = f"{row['classes']} cls, {row['mode']}", m["batch"]
            detail = f"{summary['args']['eval_batch'] / total:.2f} images/s"
        else:
            part = "fwd_bwd" if row["backward"] else "fwd"
            config, total = f"{row['classes']} cls, {part}, trim {'on' if row['trim'] else 'off'}", m[part]
            detail = f"{1e3 * total / row['classes']:.2f} ms/class"
        lines.append(f"{row['section']:<7} {row['trainer']:<12} {config:<34} {total:>8.3f}s  {detail}")
    if summary["memory"]:
        lines += ["", "peak memory of a training step:"]
        lines += [f"  {t:<12} " + "  ".join(f"{k} {v:.0f}" for k, v in m.items()) for t, m in summary["memory"].items()]
    if summary["flops"]:
        lines += ["", "training step FLOPs:"]
        for t, f in summary["flops"].items():
            peak = f"  {100 * f['of_peak']:.1f}% of peak" if f["of_peak"] else ""
            lines.append(f"  {t:<12} {f['tflop_per_step']:.3f} TFLOP/step  {f['tflops']:.3f} TFLOP/s{peak}")
    lines += ["", "ratios (same run):"] + [f"  {k:<58} {v:.3f}" for k, v in summary["ratios"].items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    Clock.WALL = args.wall
    if args.memory_child:
        memory_child(args, device)
        return
    models = _train_models(args, device, args.trainers)
    cases = build_cases(args, models, device)
    print(f"{len(cases)} configurations x ({args.warmup} warm-up + {args.repeats} timed) runs", flush=True)
    run_cases(cases, args.warmup, args.repeats)
    memory = measure_memory(args, models, device) if "memory" in args.sections else {}
    flops = {}
    if device.type == "cuda" and "train" in args.sections:
        flops = {t: count_flops(m, args.classes[-1], args, device) for t, m in models.items()}
    summary = summarise(args, cases, memory, flops, device_peak(args, device))
    text = table(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
