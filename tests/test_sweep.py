"""The sweep runner with fake commands: skip finished runs, retry once, report what is left."""

from __future__ import annotations

import io
import os
import sys
import textwrap

import pytest

from tools import sweep
from tools.parse_test_res import TEST_END, TRAIN_END
from tools.plan import Job, Step

FAKE_RUN = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    log, kind, acc, fail_times, calls = sys.argv[1:6]
    calls = Path(calls)
    n = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(n))
    if n <= int(fail_times):
        sys.exit(3)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    head = "Finish training\\n" if kind == "train" else ""
    if acc != "none":
        log.write_text(head + f"=> result\\n* accuracy: {acc}%\\n# gpu {os.environ.get('CUDA_VISIBLE_DEVICES')}\\n")
    """
)


@pytest.fixture()
def fake_step(tmp_path):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)

    def make(name: str, kind: str = "train", acc: str = "80.0", fail_times: int = 0) -> Step:
        log = tmp_path / "out" / name / "log.txt"
        calls = tmp_path / "calls" / name
        calls.parent.mkdir(exist_ok=True)
        command = (sys.executable, str(script), str(log), kind, acc, str(fail_times), str(calls))
        return Step("base" if kind == "train" else "new", "M", name, 1, command, log,
                    TRAIN_END if kind == "train" else TEST_END)  # fmt: skip

    return make


def _calls(tmp_path, name: str) -> int:
    path = tmp_path / "calls" / name
    return int(path.read_text()) if path.exists() else 0


def test_serial_skips_complete_retries_once_and_reports_left(tmp_path, fake_step):
    done_before = fake_step("done_before")
    done_before.log.parent.mkdir(parents=True)
    done_before.log.write_text("Finish training\n=> result\n* accuracy: 50.0%\n")
    jobs = [
        Job("ok", (fake_step("ok_train"), fake_step("ok_new", "test"))),
        Job("flaky", (fake_step("flaky", fail_times=1),)),
        Job("broken", (fake_step("broken", fail_times=5), fake_step("after_broken", "test"))),
        Job("no_result", (fake_step("no_result", acc="none"),)),
        Job("complete", (done_before,)),
    ]
    outcomes = sweep.run_serial(jobs, tmp_path / "logs", retries=1)
    assert [(o.name, o.status, o.attempts) for o in outcomes] == [
        ("ok", "done", 2),
        ("flaky", "done", 2),
        ("broken", "failed", 2),
        ("no_result", "failed", 2),
        ("complete", "complete", 0),
    ]
    assert _calls(tmp_path, "flaky") == 2 and _calls(tmp_path, "broken") == 2  # one retry, not more
    assert _calls(tmp_path, "after_broken") == 0  # later steps of a failed job wait
    assert _calls(tmp_path, "done_before") == 0  # finished runs are skipped
    console = (tmp_path / "logs" / "broken.txt").read_text()
    assert console.count("# exit code 3") == 2
    buf = io.StringIO()
    left = sweep.report(jobs, outcomes, buf)
    assert [s.dataset for s in left] == ["broken", "after_broken", "no_result"]
    assert "5 jobs: 1 already complete, 2 run now, 2 failed" in buf.getvalue()
    assert "runs left: 3" in buf.getvalue()
    # a second sweep runs only what is left
    again = sweep.run_serial(jobs, tmp_path / "logs", retries=0)
    assert [o.status for o in again] == ["complete", "complete", "failed", "failed", "complete"]
    assert _calls(tmp_path, "ok_train") == 1 and _calls(tmp_path, "broken") == 3


def test_local_gpus_one_run_per_gpu(tmp_path, fake_step):
    jobs = [Job(f"j{i}", (fake_step(f"j{i}"),)) for i in range(4)]
    outcomes = sweep.run_local_gpus(jobs, ["7", "9"], tmp_path / "logs")
    assert [o.status for o in outcomes] == ["done"] * 4
    gpus = {job.steps[0].log.read_text().split("# gpu ")[1].strip() for job in jobs}
    assert gpus <= {"7", "9"} and gpus


def test_dedupe_and_run_list_roundtrip(tmp_path, fake_step):
    a, b = Job("a", (fake_step("x"),)), Job("b", (fake_step("y", "test"),))
    jobs = sweep.dedupe([a, b, Job("a again", a.steps)])
    assert [j.name for j in jobs] == ["a", "b"]
    path = tmp_path / "runs.json"
    sweep.save_run_list(jobs, path)
    assert sweep.load_run_list(path) == jobs
    path.write_text('[{"name": "x", "steps": [{"command": "echo"}]}]')
    with pytest.raises(SystemExit, match=r"job 0 \(x\), step 0: missing keys \['paradigm'"):
        sweep.load_run_list(path)


def test_detect_gpus_from_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert sweep.detect_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sweep.detect_gpus() == []


def test_slurm_without_submitit_is_a_clear_error(tmp_path, monkeypatch, fake_step):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(SystemExit, match="needs the 'submitit' package"):
        sweep.run_slurm([Job("a", (fake_step("a"),))], tmp_path / "logs")


def test_cli_auto_runs_serially_without_gpus(tmp_path, fake_step, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    path = tmp_path / "runs.json"
    sweep.save_run_list([Job("one", (fake_step("one", fail_times=1),))], path)
    args = ["--run-list", str(path), "--output", str(tmp_path / "o")]
    assert sweep.main([*args, "--dry-run"]) == 0
    assert "runs left: 1" in capsys.readouterr().out
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    assert "running serially" in out and "runs left: 0" in out
    assert (tmp_path / "o" / "sweep_logs" / "one.txt").is_file()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_slurm_path_through_submitit_local_cluster(tmp_path, fake_step):
    jobs = [Job("s1", (fake_step("s1", fail_times=1),)), Job("s2", (fake_step("s2"),))]
    outcomes = sweep.run_slurm(jobs, tmp_path / "logs", cluster="local", parameters={"timeout_min": 5})
    assert [(o.name, o.status) for o in outcomes] == [("s1", "done"), ("s2", "done")]
    assert _calls(tmp_path, "s1") == 2  # the retry happens inside the task
    assert [o.status for o in sweep.run_slurm(jobs, tmp_path / "logs", cluster="local")] == ["complete"] * 2
