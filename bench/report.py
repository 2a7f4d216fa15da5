"""The benchmark's summary (JSON) and table: medians per configuration, paired ratios, load, memory, FLOPs."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any, Optional

import torch

from bench.timing import CLOCKS, MIN_ROUNDS, Case, paired_ratio

__all__ = ["clock_order", "format_ratio", "host_speed", "lead_clock", "load_range", "summarise", "table"]


def lead_clock(args: dict[str, Any]) -> str:
    """The clock the table leads with: wall on GPU or with ``--wall``, else the process's CPU time."""
    return "wall" if args["device"] != "cpu" or args["wall"] else "cpu"


def clock_order(args: dict[str, Any]) -> tuple[str, str]:
    """(the clock the figures lead with, the other one)."""
    lead = lead_clock(args)
    return lead, "wall" if lead == "cpu" else "cpu"


def load_range(rounds: Sequence[dict[str, Any]]) -> Optional[tuple[float, float]]:
    """Lowest and highest 1-minute load average recorded around the rounds (None where none was)."""
    loads = [v for r in rounds for v in (r["load_before"], r["load_after"]) if v is not None]
    return (min(loads), max(loads)) if loads else None


def host_speed(rounds: Sequence[dict[str, Any]]) -> str:
    """The reference work timed around the rounds (bench/timing.py ``reference_work``): its median and its
    slowest / fastest time, i.e. how much the machine's own speed varied over the run."""
    times = [r[k] for r in rounds for k in ("reference_before_s", "reference_after_s") if r.get(k)]
    if not times:
        return "not timed"
    return f"{1e3 * statistics.median(times):.1f} ms (median), slowest / fastest {max(times) / min(times):.2f}"


def _find(cases: Sequence[Case], section: str, trainer: str, **key: Any) -> Optional[Case]:
    for case in cases:
        if case.section == section and case.trainer == trainer and all(case.key[k] == v for k, v in key.items()):
            return case
    return None


def _ratios(args: argparse.Namespace, cases: Sequence[Case]) -> dict[str, dict]:
    """Every ratio the acceptance criteria are stated in, each paired round by round."""
    ratios: dict[str, dict] = {}
    ref = args.trainers[0]

    def add(name: str, numerator: Optional[Case], denominator: Optional[Case], invert: bool = False) -> None:
        if numerator is not None and denominator is not None:
            ratios[name] = paired_ratio(numerator, denominator, invert)

    for trainer in args.trainers:
        for n in args.classes:
            on = _find(cases, "train", trainer, classes=n, trim=True)
            add(f"train {trainer} {n} cls: untrimmed / trimmed", _find(cases, "train", trainer, classes=n, trim=False), on)
            if trainer != ref:
                add(f"train {n} cls: {trainer} / {ref}", on, _find(cases, "train", ref, classes=n, trim=True))
        for n in args.eval_classes:
            cached = _find(cases, "eval", trainer, classes=n, mode="cached")
            recompute = _find(cases, "eval", trainer, classes=n, mode="recompute")
            add(f"eval {trainer} {n} cls: cached / recompute images/s", cached, recompute, invert=True)
            if trainer != ref:
                add(f"eval {n} cls: {trainer} / {ref} per batch", cached,
                    _find(cases, "eval", ref, classes=n, mode="cached"))
        for n in args.classes:
            for backward, part in ((False, "fwd"), (True, "fwd_bwd")):
                add(f"text {trainer} {n} cls {part}: 77 tokens / trimmed",
                    _find(cases, "text", trainer, classes=n, trim=False, backward=backward),
                    _find(cases, "text", trainer, classes=n, trim=True, backward=backward))
    return ratios


def summarise(args: argparse.Namespace, cases: Sequence[Case], rounds: list[dict], memory: dict,
              flops: dict[str, float], peak: Optional[float]) -> dict[str, Any]:
    """Medians per case on both clocks, paired ratios, the rounds' load, memory and FLOPs (all from this run)."""
    rows = [{"section": c.section, "trainer": c.trainer, **c.key,
             "median_s": {clock: c.medians(clock) for clock in CLOCKS},
             "samples_s": [{part: lap._asdict() for part, lap in s.items()} for s in c.samples]} for c in cases]
    ratios = _ratios(args, cases)
    memory_ratios = {}
    ref = args.trainers[0]
    if len(memory) > 1 and ref in memory:
        key = "peak_mib" if "peak_mib" in memory[ref] else "peak_rss_mib"
        for trainer in args.trainers[1:]:
            if trainer in memory:
                memory_ratios[f"memory {trainer} / {ref} peak"] = memory[trainer][key] / memory[ref][key]
    clock = lead_clock(vars(args))
    throughput = {}
    for trainer, total in flops.items():
        step = _find(cases, "train", trainer, classes=args.classes[-1], trim=True)
        if step:
            achieved = total / step.medians(clock)["total"] / 1e12
            throughput[trainer] = {"tflop_per_step": total / 1e12, "tflops": achieved,
                                   "of_peak": achieved / peak if peak else None}
    return {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cases": rows, "rounds": rounds, "ratios": ratios, "memory_ratios": memory_ratios,
            "memory": memory, "flops": throughput}


def _config(row: dict[str, Any], eval_batch: int, medians: dict[str, float]) -> tuple[str, str]:
    if row["section"] == "train":
        return (f"{row['classes']} cls, trim {'on' if row['trim'] else 'off'}",
                f"fwd {medians['forward']:.3f}  bwd {medians['backward']:.3f}  opt {medians['optimizer']:.4f}")
    if row["section"] == "eval":
        return f"{row['classes']} cls, {row['mode']}", f"{eval_batch / medians['total']:.2f} images/s"
    part = "fwd_bwd" if row["backward"] else "fwd"
    return (f"{row['classes']} cls, {part}, trim {'on' if row['trim'] else 'off'}",
            f"{1e3 * medians['total'] / row['classes']:.2f} ms/class")


def format_ratio(paired: dict[str, Any]) -> str:
    """``median [min-max]`` of a clock's paired ratios."""
    return f"{paired['median']:.3f} [{paired['min']:.3f}-{paired['max']:.3f}]"


def table(summary: dict[str, Any]) -> str:
    args = summary["args"]
    clock, other = clock_order(args)
    n_rounds = len(summary["rounds"])
    loads = load_range(summary["rounds"])
    load = f"load average (1 min) {loads[0]:.2f}-{loads[1]:.2f}" if loads else "load average unavailable"
    lines = [f"backbone {args['backbone']}  device {args['device']}  threads {summary['threads']}  "
             f"{n_rounds} interleaved rounds (order alternating)  {load}",
             f"reference work timed around every round (the machine's own speed): {host_speed(summary['rounds'])}"]
    if n_rounds < MIN_ROUNDS:
        lines.append(f"fewer than {MIN_ROUNDS} rounds: every figure below is indicative only")
    lines += ["", f"{'section':<7} {'trainer':<12} {'configuration':<34} {clock + ' s':>9} {other + ' s':>9}  "
              f"parts ({clock}) / throughput"]
    for row in summary["cases"]:
        m = row["median_s"][clock]
        config, detail = _config(row, args["eval_batch"], m)
        lines.append(f"{row['section']:<7} {row['trainer']:<12} {config:<34} {m['total']:>9.3f} "
                     f"{row['median_s'][other]['total']:>9.3f}  {detail}")
    if summary["memory"]:
        lines += ["", "peak memory of a training step:"]
        lines += [f"  {t:<12} " + "  ".join(f"{k} {v:.0f}" for k, v in m.items()) for t, m in summary["memory"].items()]
        lines += [f"  {k}: {v:.3f}" for k, v in summary["memory_ratios"].items()]
    if summary["flops"]:
        lines += ["", "training step FLOPs:"]
        for t, f in summary["flops"].items():
            peak = f"  {100 * f['of_peak']:.1f}% of peak" if f["of_peak"] else ""
            lines.append(f"  {t:<12} {f['tflop_per_step']:.3f} TFLOP/step  {f['tflops']:.3f} TFLOP/s{peak}")
    lines += ["", f"ratios, median [min-max] of the {n_rounds} paired rounds:",
              f"  {'':<58} {clock + ' time':>21} {other + ' time':>21}"]
    lines += [f"  {k:<58} {format_ratio(v[clock]):>21} {format_ratio(v[other]):>21}"
              for k, v in summary["ratios"].items()]
    return "\n".join(lines)
