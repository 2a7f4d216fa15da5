"""Results are never mixed, lost or invented: folders that know their settings, one writer per folder,
no accuracy for work not done. Real commands (``bash scripts/...``, ``python train.py``, ``python -m
tools.sweep``) run as processes where the behaviour is about processes. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import test_reliability
from test_reliability import coop_argv, launch

import train
from tools import layout, plan, results, run_record
from tools.run_lock import FolderBusy, FolderLock

ROOT = Path(__file__).resolve().parents[1]
# test_reliability's fixtures: the micro CLIP file, a Digits root, no seconds-long environment report
digits_root, fast_env_info = test_reliability.digits_root, test_reliability.fast_env_info
micro_clip = test_reliability.micro_clip
ACCURACY = re.compile(r"^\* accuracy: ([\d.]+)%$", re.M)


# ---- folders that know their settings ----------------------------------------------------------------
# The "real" run of this test: a micro CLIP, 2 epochs; the smoke test before it adds overrides.
REAL = ["MODEL.BACKBONE.NAME", "random:micro", "INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", "2",
        "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "100"]  # fmt: skip
SMOKE = [*REAL, "OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.N_CTX", "2"]


@pytest.mark.reliability_case(
    'smoke-then-real',
    '`bash scripts/coop/base2new_train.sh digits 1 <overrides>` (a smoke test), then the same command with other overrides or none',
    'each set of overrides gets its own folder (`seed1+overrides-<hash>`); the real command trains, and `tools.tables`/`tools.sweep` read the real folder',
)
def test_smoke_run_then_the_real_command_trains_and_the_table_shows_the_real_number(digits_root, tmp_path):
    env = {**os.environ, "DATA": str(digits_root), "OUTPUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    script = str(ROOT / "scripts/coop/base2new_train.sh")

    def run(*opts: str) -> str:
        proc = subprocess.run(["bash", script, "digits", "1", *opts], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    smoke_out = run(*SMOKE)
    real_out = run(*REAL)
    assert "Skip this job" not in real_out and "Skip this job" not in smoke_out
    assert "Skip this job" in run(*REAL)  # the real run is now finished
    jobs = plan.open_world_jobs(["CoOp"], ["digits"], [1], tmp_path / "out", opts=REAL)
    step = jobs[0].steps[0]
    real_log = step.log.read_text()
    assert "epoch [2/2]" in real_log and "TRAINER.COOP.N_CTX', '2'" not in real_log
    collected = results.collect(jobs)
    assert collected.value("base", "CoOp", "digits", 1) == float(ACCURACY.findall(real_log)[-1])
    # the smoke run has its own folder, which records its settings
    smoke_dir = layout.place(step.log.parent.with_name("seed1"), SMOKE)
    assert smoke_dir != step.log.parent and "epoch [1/1]" in (smoke_dir / "log.txt").read_text()
    record = run_record.read_record(smoke_dir)
    assert record["settings"]["TRAINER.COOP.N_CTX"] == 2 and record["settings"]["OPTIM.MAX_EPOCH"] == 1
    assert record["overrides"][-4:] == ["OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.N_CTX", "2"]
    assert record["fingerprint"] != run_record.read_record(step.log.parent)["fingerprint"]
    assert "TRAINER:" in (smoke_dir / run_record.CONFIG_FILE).read_text()


@pytest.mark.reliability_case(
    'other-settings',
    "a run into a folder whose `run.json` records other settings (e.g. `--seed 2` into seed 1's folder, or FORCE=1 after a config change)",
    '`OUTPUT_DIR <dir> holds a run of other settings (SEED: 1 there, 2 here); ...` (exit 1); nothing in the folder is touched',
)
def test_a_folder_refuses_a_run_of_other_settings_naming_the_keys(digits_root, micro_clip, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.run(coop_argv(digits_root, out, micro_clip, "OPTIM.MAX_EPOCH", "1")) == 0
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert train.run(coop_argv(digits_root, out, micro_clip, "OPTIM.MAX_EPOCH", "1", seed=2)) == 1
    assert capsys.readouterr().err == (
        f"train.py: error: OUTPUT_DIR {out} holds a run of other settings (SEED: 1 there, 2 here); its results "
        "would be mixed with this run's. Use another --output-dir, or delete the folder to replace that run\n"
    )
    assert sorted(p.name for p in out.iterdir()) == before  # nothing renamed or written
    # settings that change no result (where things are, how much is printed) are not a different run
    assert train.run(coop_argv(digits_root, out, micro_clip, "OPTIM.MAX_EPOCH", "1", "TRAIN.PRINT_FREQ", "5")) == 0


@pytest.mark.reliability_case(
    'fingerprint',
    "any setting that changes results (every config key, e.g. a dataset's `DATASET.IMAGE_FOLDER`), or only where files live",
    "the first changes `run.json`'s fingerprint, the second does not; a negative seed is recorded as `unseeded`",
)
def test_fingerprint_covers_every_override_and_leaves_out_where_files_live():
    from yacs.config import CfgNode as CN

    cfg = CN({"SEED": 1, "OUTPUT_DIR": "a", "DATASET": CN({"ROOT": "r", "NAME": "Digits", "IMAGE_FOLDER": "x"})})
    base = run_record.fingerprint(cfg)
    assert len(base) == 12
    moved = cfg.clone()
    moved.OUTPUT_DIR, moved.DATASET.ROOT = "b", "s"
    assert run_record.fingerprint(moved) == base
    other = cfg.clone()
    other.DATASET.IMAGE_FOLDER = "y"  # any key, also one another module adds
    assert run_record.fingerprint(other) != base
    unseeded = cfg.clone()
    unseeded.SEED = -1
    assert run_record.settings(unseeded)["SEED"] == "unseeded"
    assert run_record.fingerprint(cfg, {"MODEL": "abc"}) != base


@pytest.mark.reliability_case(
    'lock',
    'two `python train.py` processes into one output folder at once',
    "the second stops: `OUTPUT_DIR <dir> is in use by process <pid> on host <host> (lock file <dir>/.lock); ...` (exit 5); the first's log and checkpoints are intact; SIGTERM ends the first with one line (exit 143) and releases the lock",
)
# ---- one writer per folder ---------------------------------------------------------------------------
def test_second_run_into_a_running_folder_is_refused_and_the_first_is_intact(digits_root, micro_clip, tmp_path):
    out = tmp_path / "run"
    argv = coop_argv(digits_root, out, micro_clip, "OPTIM.MAX_EPOCH", "5000")
    code = (
        "import runpy, sys; sys.path.insert(0, '.'); import engine.utils; "
        "engine.utils.collect_env_info = lambda: 'env info'; "
        f"sys.argv = ['train.py', *{argv!r}]; runpy.run_path('train.py', run_name='__main__')"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while "epoch [1/5000]" not in (out / "log.txt").read_text() if (out / "log.txt").exists() else True:
            assert first.poll() is None and time.time() < deadline, "the first run ended before it trained"
            time.sleep(0.2)
        second = launch(coop_argv(digits_root, out, micro_clip, "OPTIM.MAX_EPOCH", "5000", seed=2))
        assert second.returncode == train.EXIT_FOLDER_BUSY
        assert second.stderr == (
            f"train.py: error: OUTPUT_DIR {out} is in use by process {first.pid} on host {os.uname().nodename} "
            f"(lock file {out / '.lock'}); wait for it to end, or delete the lock file if that process is gone\n"
        )
        assert not list(out.glob("log.txt-*"))  # the first run's log was not moved away
        first.send_signal(signal.SIGTERM)  # the first run ends like after Ctrl-C: lock released
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143 and re.fullmatch(r"train\.py: interrupted at epoch \d+/5000; re-run the same "
                                                    r"command to resume from the last checkpoint\n", err)  # fmt: skip
    assert not (out / ".lock").exists()
    assert json.loads((out / "run.json").read_text())["settings"]["SEED"] == 1


@pytest.mark.reliability_case(
    'stale-lock',
    'a lock file left by a process that no longer runs on this host (SIGKILL, power cut)',
    '`Removing the stale lock <file> of <pid> process, which no longer runs`, and the run goes on',
)
def test_a_stale_lock_of_a_dead_process_is_taken_and_a_live_one_refuses(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    (tmp_path / ".lock").write_text(f"{dead.pid} {host}\n")
    with FolderLock(tmp_path, what="OUTPUT_DIR"):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()} {host}\n"
        with pytest.raises(FolderBusy, match=rf"in use by process {os.getpid()} on host {host}"):
            FolderLock(tmp_path, what="OUTPUT_DIR").acquire()
    assert f"Removing the stale lock {tmp_path / '.lock'} of {dead.pid} process" in capsys.readouterr().err
    assert not (tmp_path / ".lock").exists()


SLOW_STEP = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(120)
"""


def _sweep_with_a_slow_step(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``python -m tools.sweep --run-list`` whose one step is a bash script running a long python child."""
    (tmp_path / "slow.py").write_text(SLOW_STEP)
    pid_file = tmp_path / "child.pid"
    command = ["bash", "-c", f'"{sys.executable}" "{tmp_path / "slow.py"}" "{pid_file}"; echo after']
    step = {"paradigm": "base", "method": "M", "dataset": "d", "seed": 1, "command": command,
            "log": str(tmp_path / "out" / "log.txt"), "end_signal": "Finish training", "env": {}}  # fmt: skip
    (tmp_path / "runs.json").write_text(json.dumps([{"name": "slow", "steps": [step]}]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.sweep", "--run-list", str(tmp_path / "runs.json"), "--executor", "serial",
         "--logs-dir", str(tmp_path / "logs")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, pid_file


def _alive(pid: int, within_s: float = 10.0) -> bool:
    """Whether ``pid`` still runs after ``within_s`` seconds; a zombie (dead, not yet reaped by init) does not."""
    deadline = time.time() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in "ZX":
            return False
        if time.time() > deadline:
            return True
        time.sleep(0.1)


@pytest.mark.reliability_case(
    'sweep-signal',
    '`python -m tools.sweep` started twice; SIGTERM or Ctrl-C (SIGINT) to a running sweep',
    "the second sweep stops: `tools.sweep: the output root <dir> is in use by process <pid> ...` (exit 1); the signal is passed to every running script's process group, the sweep waits and prints `[sweep] stopped by SIGTERM: ...` (exit 143 / 130); no run outlives it",
)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_sweep_reaches_its_runs_and_leaves_no_orphan(tmp_path, sig):
    proc, pid_file = _sweep_with_a_slow_step(tmp_path)
    child = int(pid_file.read_text())
    try:
        # a second sweep over the same run list is refused while the first runs
        again = subprocess.run([sys.executable, "-m", "tools.sweep", "--run-list", str(tmp_path / "runs.json"),
                                "--executor", "serial"], cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert again.returncode == 1 and again.stderr.startswith(
            f"[sweep] error: tools.sweep: the output root {tmp_path} is in use by process {proc.pid}"
        )
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig
    assert err == (
        f"[sweep] stopped by {sig.name}: passed it on to the running job(s) and waited for them to end; run the "
        "same command again to continue\n"
    )
    assert not _alive(child), "the sweep's run outlived it"
    assert not (tmp_path / ".sweep.lock").exists()


@pytest.mark.reliability_case(
    'unmeasured',
    "`OPTIM.MAX_EPOCH 0` or `-1` without `--eval-only`; `TEST.SPLIT tset`; `--output-dir ''` or a blank `OUTPUT_DIR`",
    "`OPTIM.MAX_EPOCH 0 trains nothing, so the accuracy printed would be the untrained model's; ...`, `TEST.SPLIT must be 'val' or 'test', got 'tset'`, `OUTPUT_DIR (--output-dir) is empty; ...` (exit 1, nothing written)",
)
# ---- no accuracy for work not done -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("opts", "flags", "message"),
    [
        (["OPTIM.MAX_EPOCH", "0"], [], "OPTIM.MAX_EPOCH 0 trains nothing, so the accuracy printed would be the "
         "untrained model's; pass --eval-only (with --model-dir) to evaluate without training"),
        (["OPTIM.MAX_EPOCH", "-1"], [], "OPTIM.MAX_EPOCH -1 trains nothing"),
        (["TEST.SPLIT", "tset"], [], "TEST.SPLIT must be 'val' or 'test', got 'tset'"),
        ([], ["--output-dir", ""], "OUTPUT_DIR (--output-dir) is empty; name the folder this run writes to"),
        (["OUTPUT_DIR", " "], [], "OUTPUT_DIR (--output-dir) is empty"),
    ],
)  # fmt: skip
def test_settings_that_would_print_an_unmeasured_accuracy_are_errors(
    digits_root, micro_clip, tmp_path, capsys, opts, flags, message
):
    out = tmp_path / "run"
    argv = coop_argv(digits_root, out, micro_clip, *opts)
    i = argv.index("MODEL.BACKBONE.NAME")
    argv[i:i] = flags  # flags go before the KEY VALUE pairs; a later --output-dir wins
    monkey_cwd = os.getcwd()
    os.chdir(tmp_path)  # whatever is written by mistake lands here
    try:
        assert train.run(argv) == 1
    finally:
        os.chdir(monkey_cwd)
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: {message}") and err.count("\n") == 1
    assert not (out / "log.txt").exists() and not (tmp_path / "output").exists()


@pytest.mark.reliability_case(
    'unseeded',
    '`SEED -1` (or `--seed -1` with no seed in the configs)',
    '`SEED -1: this run is unseeded (python, numpy and torch are not seeded; it will not repeat)` in the log, and `"seed": "unseeded"` in `run.json`',
)
def test_a_negative_seed_says_unseeded_in_the_log_and_the_record(digits_root, micro_clip, tmp_path):
    out = tmp_path / "run"
    argv = coop_argv(digits_root, out, micro_clip, "OPTIM.MAX_EPOCH", "1", "SEED", "-1")
    assert train.run(argv) == 0
    log = (out / "log.txt").read_text()
    assert "SEED -1: this run is unseeded (python, numpy and torch are not seeded; it will not repeat)" in log
    assert run_record.read_record(out)["seed"] == "unseeded"


@pytest.mark.reliability_case(
    'zero-images',
    'an evaluation that sees no image',
    'an error, no `* accuracy:` line (and every log the test suite writes is scanned for an accuracy over zero images)',
)
def test_no_accuracy_line_for_zero_evaluated_images(capsys):
    from engine.config import get_cfg_default
    from engine.evaluation.evaluator import Classification

    evaluator = Classification(get_cfg_default())
    with pytest.raises(ValueError, match="no sample was processed"):
        evaluator.evaluate()
    assert "accuracy" not in capsys.readouterr().out


def test_the_session_scan_finds_a_log_with_an_accuracy_over_zero_images():
    from conftest import logs_with_accuracy_over_zero_images

    with tempfile.TemporaryDirectory() as folder:  # not under the session's tmp folder, which the scan reads
        good, bad = Path(folder) / "a" / "log.txt", Path(folder) / "b" / "log.txt-2026"
        for path, total in ((good, 5), (bad, 0)):
            path.parent.mkdir()
            path.write_text(f"=> result\n* total: {total}\n* correct: 0\n* accuracy: 0.0%\n")
        assert logs_with_accuracy_over_zero_images(Path(folder)) == [bad]
