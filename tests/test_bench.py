"""bench/ runs end to end on a tiny model and reports every section and ratio (smoke test, no timing bars)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.models import bench_cfg, build_backbone, build_prompted, class_names
from bench.run import main


def test_bench_writes_every_section_and_the_same_run_ratios(tmp_path):
    out = tmp_path / "bench"
    main(["--backbone", "random:tiny", "--trainers", "MaPLe", "BMIP", "--classes", "2", "--eval-classes", "3",
          "--eval-batch", "2", "--repeats", "2", "--warmup", "0", "--sections", "train", "eval", "text",
          "--threads", "1", "--out", str(out), "--opts", "TRAINER.BMIP.PROMPT_DEPTH", "3",
          "TRAINER.MAPLE.PROMPT_DEPTH", "3"])
    summary = json.loads(out.with_suffix(".json").read_text())
    # per trainer: train trim on/off, eval cached/recompute, text fwd & fwd+bwd x trim on/off
    assert len(summary["cases"]) == 2 * (2 + 2 + 4)
    for row in summary["cases"]:
        for clock in ("cpu", "wall"):
            assert all(v > 0 for v in row["median_s"][clock].values())
        assert len(row["samples_s"]) == 2
    assert set(summary["cases"][0]["median_s"]["cpu"]) == {"forward", "backward", "optimizer", "total"}
    # the trainers' runs of one configuration are neighbours in a round (a pair is taken seconds apart)
    first, second = summary["cases"][:2]
    assert (first["trainer"], second["trainer"]) == ("MaPLe", "BMIP")
    assert (first["section"], first["classes"], first["trim"]) == (second["section"], second["classes"], second["trim"])
    # the rounds alternate their order and record the load average around each round
    assert [r["order"] for r in summary["rounds"]] == ["forward", "reversed"]
    assert all(r["load_before"] is not None for r in summary["rounds"])
    # and time the same reference work around each round (the machine's own speed over the run)
    assert all(r["reference_before_s"] > 0 and r["reference_after_s"] > 0 for r in summary["rounds"])
    ratios = summary["ratios"]
    for key in ("train 2 cls: BMIP / MaPLe", "eval 3 cls: BMIP / MaPLe per batch",
                "eval BMIP 3 cls: cached / recompute images/s", "text MaPLe 2 cls fwd: 77 tokens / trimmed",
                "train MaPLe 2 cls: untrimmed / trimmed"):
        for clock in ("cpu", "wall"):
            paired = ratios[key][clock]
            assert len(paired["rounds"]) == 2 and paired["min"] <= paired["median"] <= paired["max"]
    # a paired ratio is taken round by round, not as a ratio of medians
    bmip, maple = (next(r for r in summary["cases"] if r["section"] == "train" and r["trainer"] == t and r["trim"])
                   for t in ("BMIP", "MaPLe"))
    step = [sum(part["cpu"] for part in s.values()) for s in bmip["samples_s"]]
    base = [sum(part["cpu"] for part in s.values()) for s in maple["samples_s"]]
    assert ratios["train 2 cls: BMIP / MaPLe"]["cpu"]["rounds"] == pytest.approx([a / b for a, b in zip(step, base)])
    table = out.with_suffix(".txt").read_text()
    assert "images/s" in table and "ms/class" in table and "paired rounds" in table and "load average" in table
    assert "fewer than 7 rounds: every figure below is indicative only" in table
    assert "reference work timed around every round (the machine's own speed): " in table


def test_host_speed_summarises_the_reference_work_around_the_rounds():
    from bench.report import host_speed

    rounds = [{"reference_before_s": 0.010, "reference_after_s": 0.012}, {"reference_before_s": 0.011,
                                                                          "reference_after_s": 0.015}]
    assert host_speed(rounds) == "11.5 ms (median), slowest / fastest 1.50"
    assert host_speed([{"load_before": 1.0}]) == "not timed"  # a run kept before it was timed


def test_bench_models_are_the_trainers_models():
    cfg = bench_cfg("random:tiny", ["TRAINER.BMIP.PRESET", "paper"])
    backbone = build_backbone("random:tiny", torch.device("cpu"))
    model = build_prompted("BMIP", cfg, backbone, class_names(12))
    assert model.prompt_learner.options.attn_reduce == "per_sample"  # the config reached the learner
    assert model.classnames[10] == model.classnames[0] == "Annual Crop Land"
    # a trainer without a separate prompt learner builds its whole model (MMRL's two heads)
    mmrl_cfg = bench_cfg("random:tiny", ["DATASET.NAME", "EuroSAT"])  # MMRL's prompts use the dataset's template
    assert type(build_prompted("MMRL", mmrl_cfg, backbone, class_names(3))).__name__ == "MMRLCLIP"
    assert type(build_prompted("HiCroPL", cfg, backbone, class_names(3)).prompt_learner).__name__ == "HiCroPLPrompts"
    with pytest.raises(ValueError, match="unknown trainer 'Nope'; registered"):
        build_prompted("Nope", cfg, backbone, class_names(2))
    with pytest.raises(ValueError, match="KEY VALUE"):
        bench_cfg("random:tiny", ["TRAINER.BMIP.PRESET"])


def test_performance_doc_is_rendered_from_the_kept_run_of_its_own_command(tmp_path, monkeypatch):
    import bench.doc as doc

    # A kept run of bench.doc's command, made cheap: the same arguments on the tiny model and one round.
    argv = list(doc.DOC_ARGV)
    argv[argv.index("random:ViT-B/16")] = "random:tiny"
    argv[argv.index("--repeats") + 1], argv[argv.index("--warmup") + 1] = "1", "0"
    argv += ["--sections", "train", "eval", "text", "--opts", "TRAINER.BMIP.PROMPT_DEPTH", "3",
             "TRAINER.MAPLE.PROMPT_DEPTH", "3"]
    run = tmp_path / "performance" / "bench"
    main([*argv, "--out", str(run)])
    page = tmp_path / "PERFORMANCE.md"
    page.write_text(f"# Performance\n\nbefore\n{doc.BEGIN}\nstale figures\n{doc.END}\nafter\n")
    monkeypatch.setattr(doc, "RUN", run)
    monkeypatch.setattr(doc, "DOC", page)
    # Not a run of the command: other backbone and rounds are named.
    with pytest.raises(ValueError, match=r"not made by bench.doc's command: \['backbone', .*'repeats'"):
        doc.write_doc(page)
    monkeypatch.setattr(doc, "DOC_ARGV", argv)
    doc.write_doc(page)
    text = page.read_text()
    assert "stale figures" not in text and text.startswith("# Performance\n\nbefore\n") and text.endswith("after\n")
    summary = json.loads(run.with_suffix(".json").read_text())
    paired = summary["ratios"]["train 5 cls: BMIP / MaPLe"]["cpu"]
    assert f"| BMIP / MaPLe, training step, 5 classes, batch 4 | {paired['median']:.3f} [" in text
    assert "every figure below is indicative only" in text  # the bench's table, one round
    assert "the machine's own speed, from a fixed piece of reference work timed before and after every round: " in text
    assert doc.main(["--check"]) == 0
    page.write_text(text.replace(f"{paired['median']:.3f} [", "0.500 [", 1))
    assert doc.main(["--check"]) == 1


def test_the_committed_performance_doc_is_the_rendering_of_the_kept_run():
    import bench.doc as doc

    assert doc.main(["--check"]) == 0
