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
known peak of the device). Writes ``<out>.json`` (every raw time) and ``<out>.txt`` (the table). Every
interval is timed on the process's CPU clock and on the wall clock; every ratio is the median of the
paired ratios of the rounds, with their spread, and the load average of every round is recorded
(bench/timing.py). On CPU the table leads with CPU time (``--wall``: wall time); on GPU with wall time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.models import bench_cfg, build_backbone, build_prompted, class_names
from bench.report import summarise, table
from bench.timing import MIN_ROUNDS, Case, Clock, Sample, run_rounds

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
    p.add_argument("--repeats", type=int, default=MIN_ROUNDS,
                   help=f"timed rounds; every configuration runs once per round (medians; < {MIN_ROUNDS}: indicative)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration first")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--no-before", action="store_true", help="skip the un-optimised 'before' configurations")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (0: torch's default)")
    p.add_argument("--wall", action="store_true", help="on CPU, lead the table with wall time (both are recorded)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off", help="autocast on GPU")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for the utilisation column")
    p.add_argument("--out", default="output/bench/bench", help="writes <out>.json and <out>.txt")
    p.add_argument("--opts", nargs="*", default=[], help="config KEY VALUE pairs (as train.py's opts)")
    p.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    return p


# ---- timed calls ----------------------------------------------------------------------------------------
def _autocast(device: torch.device, amp: str) -> Any:
    if amp == "off" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def train_step(model: Any, images: torch.Tensor, labels: torch.Tensor, optim: torch.optim.Optimizer,
               amp: str) -> Sample:
    """One step as the trainers run it: forward (incl. loss), backward and optimizer step."""
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


def eval_batch(model: Any, images: torch.Tensor, amp: str) -> Sample:
    model.eval()
    clock = Clock(images.device)
    with torch.no_grad(), _autocast(images.device, amp):
        model(images)
    return {"batch": clock.lap()}


def text_tower(model: Any, backward: bool, amp: str) -> Sample:
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
                                      lambda m=model, i=images: eval_batch(m, i, args.amp), figure="batch"))
        if "text" in args.sections:
            for n_cls in args.classes:
                for backward in (False, True):
                    for trim in variants:
                        def prepare(m=model, n=n_cls, t=trim) -> None:
                            m.set_classnames(class_names(n))
                            _switch(m, trim=t, cache=False)
                        cases.append(Case("text", trainer, {"classes": n_cls, "trim": trim, "backward": backward},
                                          prepare, lambda m=model, b=backward: text_tower(m, b, args.amp),
                                          figure="fwd_bwd" if backward else "fwd"))
    # The trainers' runs of one configuration next to each other (MaPLe's 5-class step, then BMIP's, ...):
    # the two samples of a paired ratio are then taken seconds apart, not a whole round apart.
    cases.sort(key=lambda c: (SECTIONS.index(c.section), list(c.key.values())))
    return cases


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


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args, device)
        return
    models = _train_models(args, device, args.trainers)
    cases = build_cases(args, models, device)
    print(f"{len(cases)} configurations x ({args.warmup} warm-up + {args.repeats} timed) runs", flush=True)
    rounds = run_rounds(cases, args.warmup, args.repeats, log=lambda line: print(line, flush=True))
    memory = measure_memory(args, models, device) if "memory" in args.sections else {}
    flops = {}
    if device.type == "cuda" and "train" in args.sections:
        flops = {t: count_flops(m, args.classes[-1], args, device) for t, m in models.items()}
    summary = summarise(args, cases, rounds, memory, flops, device_peak(args, device))
    text = table(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
