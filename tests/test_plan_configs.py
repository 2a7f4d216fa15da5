"""Which config file the run plan uses for every method and dataset: the releases' per-dataset choices.

The scripts choose the config (``lib_setup`` by dataset), the plan asks the scripts (``tools.layout``), so
this checks both. A release that switches configs by dataset: CoOp (ImageNet 50 epochs), TCP (ImageNet and
SUN397 25 epochs), MMA (``run_examples.sh``: ImageNet ``vit_b16_ep5_imnet``) and MMRL (its base-to-new
scripts: ImageNet ``vit_b16_imagenet``); our MMA+BMIP and MMRL+BMIP follow their hosts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import layout, plan

ROOT = Path(__file__).resolve().parents[1]

# label: (config folder, base-to-new config, {dataset: its own base-to-new config}, cross-dataset config)
EXPECTED: dict[str, tuple[str, str, dict[str, str], str | None]] = {
    "CLIP": ("ZeroshotCLIP", "vit_b16", {}, "vit_b16"),
    "CoOp": ("CoOp", "vit_b16_ctxv1", {"ImageNet": "vit_b16_ep50_ctxv1"}, "vit_b16_ep50_ctxv1"),
    "CoCoOp": ("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", {}, "vit_b16_c4_ep10_batch1_ctxv1"),
    "IVLP": ("IVLP", "vit_b16_c2_ep5_batch4_2+2ctx", {}, "vit_b16_c2_ep5_batch4_2+2ctx"),
    "MaPLe": ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx", {}, "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"),
    "MaPLe†": ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_dagger", {}, "vit_b16_c2_ep5_batch4_2ctx_dagger"),
    "BMIP": ("BMIP", "BMIP_ctx2_dp9_lr2", {}, "BMIP_ctx2_dp9_lr2_cross_datasets"),
    "BMIP-paper": ("BMIP", "BMIP_ctx2_dp9_lr2_paper", {}, "BMIP_ctx2_dp9_lr2_paper"),
    "MaPLe+BMIP": ("BMIP", "BMIP_ctx2_dp9_lr2", {}, "BMIP_ctx2_dp9_lr2_cross_datasets"),
    "Addition": ("BMIP", "BMIP_ablation_add", {}, "BMIP_ablation_add"),
    "Attention": ("BMIP", "BMIP_ablation_atten", {}, "BMIP_ablation_atten"),
    "Joint": ("BMIP", "BMIP_ablation_joint", {}, "BMIP_ablation_joint"),
    "PromptSRC": ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx", {}, "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"),
    "PromptSRC+BMIP": (
        "PromptSRC_BMIP", "vit_bitp_ctx4_ep20TT_adam_PromptSRC", {}, "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"
    ),
    "CoPrompt": ("CoPrompt", "coprompt", {}, "coprompt"),
    "CoPrompt+BMIP": ("CoPrompt_BMIP", "coprompt_bmip", {}, "coprompt_bmip"),
    "MMA": ("MultiModalAdapter", "vit_b16_ep5", {"ImageNet": "vit_b16_ep5_imnet"}, "vit_b16_ep5_imnet"),
    "MMA+BMIP": ("MMA_BMIP", "vit_b16_ep5", {"ImageNet": "vit_b16_ep5_imnet"}, "vit_b16_ep5_imnet"),
    "CLIP-LoRA": ("CLIPLoRA", "vit_b16", {}, "vit_b16"),
    "MMRL": ("MMRL", "vit_b16", {"ImageNet": "vit_b16_imagenet"}, "vit_b16_cross_datasets"),
    "MMRL+BMIP": ("MMRL_BMIP", "vit_b16", {"ImageNet": "vit_b16_imagenet"}, "vit_b16_cross_datasets"),
    "KgCoOp": ("KgCoOp", "vit_b16_ep100_ctxv1", {}, "vit_b16_ep100_ctxv1"),
    "TCP": (
        "TCP", "vit_b16_ep50_ctxv1",
        {"ImageNet": "vit_b16_ep25_ctxv1", "SUN397": "vit_b16_ep25_ctxv1"}, "vit_b16_ep25_ctxv1",
    ),
    "CoOp+DePT": ("CoOp_DePT", "vit_b16_ep10_bs4_lr35", {}, "vit_b16_ep10_bs4_lr35"),
    "KgCoOp+DePT": ("KgCoOp_DePT", "vit_b16_ep10_ctxv1_bs4_lr35", {}, "vit_b16_ep10_ctxv1_bs4_lr35"),
    "MaPLe+DePT": ("MaPLe_DePT", "vit_b16_c2_ep10_batch4_2ctx", {}, "vit_b16_c2_ep10_batch4_2ctx"),
    "PromptSRC+DePT": (
        "PromptSRC_DePT", "vit_b16_c2_ep20_batch4_4+4ctx", {}, "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"
    ),
    "BMIP+DePT": ("BMIP_DePT", "BMIP_ctx2_dp9_lr2", {}, "BMIP_ctx2_dp9_lr2_cross_datasets"),
    "HiCroPL": (
        "HiCroPL", "vit_b16_c2_ep50_batch32_16ctx",
        {"ImageNet": "vit_b16_c2_ep40_batch128_16ctx"}, "vit_b16_c2_ep5_batch32_2ctx_cross_datasets",
    ),
}  # fmt: skip


def _config_file(step: plan.Step) -> str:
    info = layout.read_script(step.command[1], step.command[2:], dict(step.env))
    path = f"configs/trainers/{info.cfg_dir}/{info.cfg}.yaml"
    assert (ROOT / path).is_file(), path
    return path


def test_every_method_has_an_expectation():
    assert set(EXPECTED) == set(plan.METHODS)


@pytest.mark.parametrize("label", sorted(plan.METHODS))
def test_base2new_plan_uses_the_release_config_of_each_dataset(label, tmp_path):
    folder, default, per_dataset, _ = EXPECTED[label]
    for job in plan.open_world_jobs([label], plan.OPEN_WORLD_DATASETS, [1], tmp_path):
        for step in job.steps:  # training and both evaluations load the same config
            expected = f"configs/trainers/{folder}/{per_dataset.get(step.dataset, default)}.yaml"
            assert _config_file(step) == expected, (label, step.dataset, step.paradigm)


@pytest.mark.parametrize("label", sorted(plan.METHODS))
def test_transfer_plan_uses_the_release_cross_dataset_config(label, tmp_path):
    folder, _, _, cross = EXPECTED[label]
    for job in plan.transfer_jobs([label], (*plan.XD_TARGETS, *plan.DG_TARGETS), [1], tmp_path):
        for step in job.steps:
            assert _config_file(step) == f"configs/trainers/{folder}/{cross}.yaml", (label, step.dataset)
