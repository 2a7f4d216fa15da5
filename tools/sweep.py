"""Run a table's run list to completion: on every local GPU, on SLURM, or serially on a CPU machine.

    python -m tools.sweep --table 1 [--executor auto|serial|local|slurm] [--gpus 0 1 ...]
                          [--seeds ...] [--methods ...] [--datasets ...] [--opts KEY VALUE ...]
                          [--dry-run] [--print-table] [--run-list FILE | --write-run-list FILE]

A job is a chain of script calls (train on base classes, evaluate new, evaluate all); its steps run
in order on one worker. A step whose ``log.txt`` already shows a finished run is skipped; a step that
fails (non-zero exit, or a log without its result) is run once more - the scripts resume unfinished
training from the run folder's checkpoints - and if it fails again the rest of its job is left for
the report. ``auto`` uses one worker per visible GPU (``CUDA_VISIBLE_DEVICES`` set per run) when
there are GPUs and runs serially otherwise. ``slurm`` submits one array task per job through
``submitit`` (``pip install submitit``) and waits for them. The console output of every job goes to
``<logs-dir>/<job>.txt``; the run itself logs to its own ``log.txt`` as always.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tools import plan
from tools.plan import Job, Step
from tools.run_lock import FolderBusy, FolderLock

__all__ = [
    "JobOutcome",
    "dedupe",
    "run_step",
    "run_job",
    "run_serial",
    "run_local_gpus",
    "run_slurm",
    "detect_gpus",
    "save_run_list",
    "load_run_list",
    "report",
    "main",
]


@dataclass(frozen=True)
class JobOutcome:
    """How one job ended: ``complete`` (nothing to do), ``done`` (ran now) or ``failed`` (at ``failed_step``)."""

    name: str
    status: str
    attempts: int = 0
    failed_step: int | None = None
    console: str | None = None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")


def dedupe(jobs: Iterable[Job]) -> list[Job]:
    """Drop jobs whose script calls repeat an earlier job's (e.g. Table 4's MaPLe+BMIP is BMIP)."""
    seen, out = set(), []
    for job in jobs:
        key = tuple((s.command, s.env) for s in job.steps)
        if key not in seen:
            seen.add(key)
            out.append(job)
    return out


class Stopped(Exception):
    """SIGTERM or SIGINT reached the sweep: no further step starts."""


# The running script calls (each the leader of its own process group) and whether a stop was asked.
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_stop = threading.Event()


def _forward(signum: int, frame: object) -> None:
    """Signal handler: stop starting steps and pass the signal to every running script's process group."""
    _stop.set()
    with _children_lock:
        for child in _children:
            try:
                os.killpg(child.pid, signum)
            except ProcessLookupError:
                pass


def run_step(step: Step, console, extra_env: Mapping[str, str] | None = None) -> bool:
    """Run one script call from the repository root; True when its log then holds its result.

    The script runs in its own process group, so that a signal the sweep forwards reaches the
    ``train.py`` under it too (bash does not pass SIGTERM on to the command it waits for).
    """
    if _stop.is_set():
        raise Stopped
    env = {**os.environ, **dict(step.env), **(extra_env or {})}
    console.write(f"$ {' '.join(step.command)}\n")
    console.flush()
    with _children_lock:
        proc = subprocess.Popen(
            step.command, env=env, cwd=plan.REPO_ROOT, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _children.add(proc)
    try:
        proc.wait()
    finally:
        with _children_lock:
            _children.discard(proc)
    if _stop.is_set():
        console.write(f"# stopped by a signal (exit code {proc.returncode})\n")
        console.flush()
        raise Stopped
    ok = proc.returncode == 0 and step.done()
    console.write(
        f"# exit code {proc.returncode}; result {'found' if step.done() else 'missing'} in {step.log}\n"
    )
    console.flush()
    return ok


def run_job(
    job: Job, logs_dir: Path, retries: int = 1, extra_env: Mapping[str, str] | None = None
) -> JobOutcome:
    """Run the unfinished steps of ``job`` in order, retrying a failed step ``retries`` times."""
    if job.done():
        return JobOutcome(job.name, "complete")
    logs_dir.mkdir(parents=True, exist_ok=True)
    console_path = logs_dir / f"{_slug(job.name)}.txt"
    attempts = 0
    with console_path.open("a") as console:
        for index, step in enumerate(job.steps):
            if step.done():
                continue
            for _ in range(1 + retries):
                attempts += 1
                if run_step(step, console, extra_env):
                    break
            else:
                return JobOutcome(job.name, "failed", attempts, index, str(console_path))
    return JobOutcome(job.name, "done", attempts, None, str(console_path))


def _announce(outcome: JobOutcome, where: str = "") -> None:
    extra = f" (step {outcome.failed_step + 1}; see {outcome.console})" if outcome.status == "failed" else ""
    print(f"[sweep]{where} {outcome.status:8s} {outcome.name}{extra}", flush=True)


def run_serial(jobs: Sequence[Job], logs_dir: Path, retries: int = 1) -> list[JobOutcome]:
    """One job after the other, in this process's environment (CPU-only machines)."""
    outcomes = []
    for job in jobs:
        outcomes.append(run_job(job, logs_dir, retries))
        _announce(outcomes[-1])
    return outcomes


def run_local_gpus(
    jobs: Sequence[Job], gpus: Sequence[str], logs_dir: Path, retries: int = 1
) -> list[JobOutcome]:
    """One worker per GPU pulling jobs from a shared queue; each run sees only its GPU."""
    if not gpus:
        raise ValueError("run_local_gpus needs at least one GPU id")
    pending: queue.Queue[tuple[int, Job]] = queue.Queue()
    for item in enumerate(jobs):
        pending.put(item)
    outcomes: dict[int, JobOutcome] = {}
    lock = threading.Lock()

    def worker(gpu: str) -> None:
        while True:
            try:
                index, job = pending.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = run_job(job, logs_dir, retries, {"CUDA_VISIBLE_DEVICES": gpu})
            except Stopped:
                return
            with lock:
                outcomes[index] = outcome
                _announce(outcome, f" gpu {gpu}")

    threads = [threading.Thread(target=worker, args=(gpu,), daemon=True) for gpu in gpus]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # a timed join keeps the main thread free for signal handlers
        for t in threads:
            t.join(0.2)
    if _stop.is_set():
        raise Stopped
    return [outcomes[i] for i in range(len(jobs))]


def run_slurm(
    jobs: Sequence[Job],
    logs_dir: Path,
    retries: int = 1,
    folder: Path | None = None,
    parameters: Mapping[str, object] | None = None,
    cluster: str | None = None,
) -> list[JobOutcome]:
    """Submit one array task per job through submitit and wait; each task runs ``run_job``.

    Submit from the repository root (the tasks import ``tools.sweep`` from there). ``cluster`` is
    submitit's (``None`` = detect SLURM; ``"local"`` runs the tasks as local processes).
    """
    try:
        import submitit
    except ImportError as e:
        raise SystemExit(
            "tools.sweep --executor slurm needs the 'submitit' package (pip install submitit)"
        ) from e
    executor = submitit.AutoExecutor(folder=str(folder or logs_dir / "submitit"), cluster=cluster)
    executor.update_parameters(**{"name": "bmip-sweep", "gpus_per_node": 1, **(parameters or {})})
    pending = [i for i, job in enumerate(jobs) if not job.done()]
    outcomes = {i: JobOutcome(job.name, "complete") for i, job in enumerate(jobs) if i not in pending}
    if pending:
        todo = [jobs[i] for i in pending]
        submitted = executor.map_array(run_job, todo, [logs_dir] * len(todo), [retries] * len(todo))
        print(f"[sweep] submitted {len(submitted)} jobs (first id {submitted[0].job_id})", flush=True)
        for i, task in zip(pending, submitted):
            try:
                outcome = task.result()
            except Exception as e:  # a task that died (time limit, node failure) is a failed job
                outcome = JobOutcome(
                    jobs[i].name, "failed", 0, 0, f"{task.paths.stderr} ({type(e).__name__})"
                )
            outcomes[i] = outcome
            _announce(outcome, f" task {task.job_id}")
    return [outcomes[i] for i in range(len(jobs))]


def detect_gpus() -> list[str]:
    """GPU ids to use: ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi`` lists, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True
    )
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


# ---- run lists on disk -----------------------------------------------------------------------------
_STEP_KEYS = ("paradigm", "method", "dataset", "seed", "command", "log", "end_signal", "env")


def save_run_list(jobs: Sequence[Job], path: Path) -> None:
    """Write jobs as JSON (edit it, then run it with ``--run-list``)."""
    data = []
    for job in jobs:
        steps = []
        for step in job.steps:
            d = asdict(step)
            d.update(command=list(step.command), log=str(step.log), env=dict(step.env))
            steps.append(d)
        data.append({"name": job.name, "steps": steps})
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def load_run_list(path: Path) -> list[Job]:
    """Read a JSON run list; a malformed entry is an error naming the file, the job and the key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"run list {path}: cannot read it as JSON ({e})") from e
    if not isinstance(data, list):
        raise SystemExit(f"run list {path}: expected a JSON list of jobs, got {type(data).__name__}")
    jobs = []
    for i, job in enumerate(data):
        where = f"run list {path}, job {i}"
        if not isinstance(job, dict) or "name" not in job or not isinstance(job.get("steps"), list):
            raise SystemExit(f"{where}: expected an object with 'name' and a list 'steps'")
        steps = []
        for j, s in enumerate(job["steps"]):
            missing = [k for k in _STEP_KEYS if k not in s]
            if missing:
                raise SystemExit(f"{where} ({job['name']}), step {j}: missing keys {missing}")
            if not isinstance(s["command"], list) or not all(isinstance(c, str) for c in s["command"]):
                raise SystemExit(f"{where} ({job['name']}), step {j}: 'command' must be a list of strings")
            steps.append(
                Step(
                    s["paradigm"],
                    s["method"],
                    s["dataset"],
                    int(s["seed"]),
                    tuple(s["command"]),
                    Path(s["log"]),
                    s["end_signal"],
                    tuple(sorted((str(k), str(v)) for k, v in dict(s["env"]).items())),
                )
            )
        jobs.append(Job(str(job["name"]), tuple(steps)))
    return jobs


def report(jobs: Sequence[Job], outcomes: Sequence[JobOutcome] | None = None, stream=None) -> list[Step]:
    """Print counts and every step still without a result; return those steps."""
    stream = stream or sys.stdout
    left = [step for job in jobs for step in job.steps if not step.done()]
    if outcomes is not None:
        counts = {s: sum(o.status == s for o in outcomes) for s in ("complete", "done", "failed")}
        stream.write(
            f"[sweep] {len(jobs)} jobs: {counts['complete']} already complete, {counts['done']} run now, "
            f"{counts['failed']} failed\n"
        )
        for o in outcomes:
            if o.status == "failed":
                stream.write(
                    f"[sweep] failed: {o.name} at step {(o.failed_step or 0) + 1} (console: {o.console})\n"
                )
    stream.write(f"[sweep] runs left: {len(left)}\n")
    for step in left:
        stream.write(
            f"  {step.paradigm} {step.method} {step.dataset} seed{step.seed}: {' '.join(step.command)}\n"
        )
    return left


def _executor(args: argparse.Namespace) -> tuple[str, Callable[[Sequence[Job]], list[JobOutcome]]]:
    logs_dir = args.logs_dir or Path(args.output) / "sweep_logs"
    kind = args.executor
    gpus = args.gpus if args.gpus is not None else detect_gpus()
    if kind == "auto":
        kind = "local" if gpus else "serial"
    if kind == "serial":
        return "serially", lambda jobs: run_serial(jobs, logs_dir, args.retries)
    if kind == "local":
        if not gpus:
            raise SystemExit(
                "tools.sweep --executor local: no GPU found (set --gpus or CUDA_VISIBLE_DEVICES)"
            )
        return f"on GPUs {','.join(gpus)}", lambda jobs: run_local_gpus(jobs, gpus, logs_dir, args.retries)
    params: dict[str, object] = {
        "timeout_min": args.slurm_timeout_min,
        "cpus_per_task": args.slurm_cpus_per_task,
    }
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_mem_gb:
        params["mem_gb"] = args.slurm_mem_gb
    if args.slurm_array_parallelism:
        params["slurm_array_parallelism"] = args.slurm_array_parallelism
    return "on SLURM", lambda jobs: run_slurm(
        jobs, logs_dir, args.retries, args.slurm_folder, params, cluster=args.slurm_cluster
    )


_received: list[int] = [signal.SIGTERM]


def _execute_with_signals(
    jobs: Sequence[Job], where: str, execute: Callable[[Sequence[Job]], list[JobOutcome]]
) -> list[JobOutcome]:
    """``execute(jobs)`` with SIGTERM and SIGINT forwarded to the running scripts (see ``run_step``)."""

    def handler(signum: int, frame: object) -> None:
        _received[0] = signum
        _forward(signum, frame)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    _stop.clear()
    try:
        todo = sum(not job.done() for job in jobs)
        print(f"[sweep] {len(jobs)} jobs, {todo} with unfinished runs; running {where}", flush=True)
        start = time.time()
        outcomes = execute(jobs)
        if _stop.is_set():
            raise Stopped
        print(f"[sweep] finished in {time.time() - start:.0f}s", flush=True)
        return outcomes
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    from tools import tables

    parser = argparse.ArgumentParser(description="Run a paper table's run list to completion.")
    plan.add_plan_arguments(parser)
    tables.add_table_arguments(parser)
    parser.add_argument("--executor", choices=("auto", "serial", "local", "slurm"), default="auto")
    parser.add_argument("--gpus", nargs="*", default=None, help="GPU ids for --executor local (default: all)")
    parser.add_argument("--retries", type=int, default=1, help="extra attempts for a failed run (default 1)")
    parser.add_argument(
        "--logs-dir", type=Path, default=None, help="console logs (default <output>/sweep_logs)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--print-table", action="store_true", help="print the table when the runs are over")
    parser.add_argument(
        "--run-list", type=Path, default=None, help="run this JSON run list instead of a table's"
    )
    parser.add_argument(
        "--write-run-list", type=Path, default=None, help="write the run list as JSON and exit"
    )
    slurm = parser.add_argument_group("SLURM (--executor slurm, through submitit)")
    slurm.add_argument("--slurm-partition", default=None)
    slurm.add_argument("--slurm-timeout-min", type=int, default=24 * 60)
    slurm.add_argument("--slurm-cpus-per-task", type=int, default=8)
    slurm.add_argument("--slurm-mem-gb", type=int, default=None)
    slurm.add_argument("--slurm-array-parallelism", type=int, default=None)
    slurm.add_argument(
        "--slurm-folder", type=Path, default=None, help="submitit's folder (default <logs-dir>/submitit)"
    )
    slurm.add_argument("--slurm-cluster", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    jobs = load_run_list(args.run_list) if args.run_list is not None else plan.jobs_from_args(args)
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    jobs = dedupe(jobs)
    if args.write_run_list is not None:
        save_run_list(jobs, args.write_run_list)
        print(f"[sweep] wrote {len(jobs)} jobs to {args.write_run_list}")
        return 0
    if args.dry_run:
        report(jobs)
        return 0
    where, execute = _executor(args)
    lock_dir = Path(args.output) if args.run_list is None else args.run_list.resolve().parent
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(lock_dir, ".sweep.lock", what="tools.sweep: the output root"):
            outcomes = _execute_with_signals(jobs, where, execute)
    except FolderBusy as e:
        print(f"[sweep] error: {e}", file=sys.stderr, flush=True)
        return 1
    except Stopped:
        print(
            f"[sweep] stopped by {signal.Signals(_received[0]).name}: passed it on to the running job(s) and "
            "waited for them to end; run the same command again to continue",
            file=sys.stderr,
            flush=True,
        )
        return 128 + _received[0]
    left = report(jobs, outcomes)
    if args.print_table and args.run_list is None:
        tables.print_table(jobs, args)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
