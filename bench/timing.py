"""Timing for the benchmark: two clocks per interval, interleaved rounds, paired ratios, load average.

A ratio between two configurations (BMIP / MaPLe, untrimmed / trimmed, ...) is only as good as the
conditions the two shared. So every configuration runs once per round, the rounds alternate their order
(forward, then reversed: whatever runs first or last in a round does not always belong to the same
configuration; bench/run.py puts the trainers' runs of one configuration next to each other), and a ratio
is computed per round from the two samples of that round; the bench reports
the median of those paired ratios and their spread. Every interval is timed on two clocks: the process's
CPU time (what the work itself costs; with one intra-op thread it holds no OpenMP spin-waiting and no time
spent waiting for a core) and wall time (what a user waits). The machine's load average is recorded before
and after every round, so a reader can see whether other processes shared the machine; and a fixed piece of
reference work is timed before and after every round, so a reader can see whether the machine itself ran
at one speed (a virtual machine's host can slow every process down without any load showing inside it).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import torch

__all__ = ["CLOCKS", "MIN_ROUNDS", "Case", "Clock", "Lap", "paired_ratio", "reference_work", "run_rounds"]

CLOCKS = ("cpu", "wall")
# Fewer paired rounds than this give a ratio the table marks as indicative (issue #31's protocol).
MIN_ROUNDS = 7


class Lap(NamedTuple):
    """One interval on both clocks, in seconds."""

    cpu: float
    wall: float


class Clock:
    """Intervals of the measured work on both clocks. On GPU both are taken after a device sync (kernels are
    asynchronous); there the CPU time includes the host's wait for the device, so wall time is the figure."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.last = self.now()

    def now(self) -> Lap:
        if self.cuda:
            torch.cuda.synchronize()
        return Lap(time.process_time(), time.perf_counter())

    def lap(self) -> Lap:
        now = self.now()
        elapsed = Lap(now.cpu - self.last.cpu, now.wall - self.last.wall)
        self.last = now
        return elapsed


Sample = dict[str, Lap]  # part name ("forward", "batch", ...) -> interval


class Case:
    """One configuration to time: its section, trainer and key, how to prepare the model, the timed call,
    and the part whose time is the configuration's figure (None: the sum of all parts, a training step)."""

    def __init__(self, section: str, trainer: str, key: dict[str, Any], prepare: Callable[[], None],
                 run: Callable[[], Sample], figure: Optional[str] = None) -> None:
        self.section, self.trainer, self.key = section, trainer, key
        self.prepare, self.run, self.figure = prepare, run, figure
        self.samples: list[Sample] = []

    def total(self, sample: Sample, clock: str) -> float:
        """The figure of one sample on ``clock``."""
        parts = {name: getattr(lap, clock) for name, lap in sample.items()}
        return sum(parts.values()) if self.figure is None else parts[self.figure]

    def medians(self, clock: str) -> dict[str, float]:
        """Median of every part and of the figure (``"total"``) over the timed rounds, on ``clock``."""
        parts = {k: statistics.median(getattr(s[k], clock) for s in self.samples) for k in self.samples[0]}
        parts["total"] = statistics.median(self.total(s, clock) for s in self.samples)
        return parts


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def reference_work(repeats: int = 5) -> float:
    """CPU seconds of a fixed piece of work (median of ``repeats``): a matmul and an elementwise pass over a
    few megabytes, the two kinds of work of a training step. Its spread over a run is the machine's own
    variation, independent of the configurations measured."""
    a = torch.full((512, 768), 0.5)
    b = torch.full((768, 768), 0.25)
    c = torch.full((4_000_000,), 0.5)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b)
        torch.sigmoid(c)
        times.append(time.process_time() - start)
    return statistics.median(times)


def run_rounds(cases: Sequence[Case], warmup: int, rounds: int, log: Callable[[str], None] = print) -> list[dict]:
    """Warm every case up, then ``rounds`` rounds in which every case runs once, in alternating order.

    Returns per round its order, and the load average and :func:`reference_work` before and after it."""
    for case in cases:
        case.prepare()
        for _ in range(warmup):
            case.run()
    record = []
    for r in range(rounds):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        before, reference_before = load_average(), reference_work()
        for case in order:
            case.prepare()
            case.samples.append(case.run())
        after, reference_after = load_average(), reference_work()
        record.append({"round": r + 1, "order": "forward" if r % 2 == 0 else "reversed",
                       "load_before": before, "load_after": after,
                       "reference_before_s": reference_before, "reference_after_s": reference_after})
        log(f"round {r + 1}/{rounds} done (load average {before} -> {after})")
    return record


def paired_ratio(numerator: Case, denominator: Case, invert: bool = False) -> dict[str, dict[str, Any]]:
    """Per clock: the ratio numerator / denominator of every round (denominator / numerator with
    ``invert``), their median, min and max. Both cases ran in every round, so round r's samples pair."""
    if len(numerator.samples) != len(denominator.samples):
        raise ValueError(
            f"cases {numerator.trainer} {numerator.key} and {denominator.trainer} {denominator.key} have "
            f"{len(numerator.samples)} and {len(denominator.samples)} samples; paired ratios need equal rounds"
        )
    result = {}
    for clock in CLOCKS:
        per_round = [
            numerator.total(a, clock) / denominator.total(b, clock)
            for a, b in zip(numerator.samples, denominator.samples)
        ]
        if invert:
            per_round = [1.0 / r for r in per_round]
        result[clock] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
                         "rounds": per_round}
    return result
