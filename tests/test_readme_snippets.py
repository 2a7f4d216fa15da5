"""The README's "Dropping BMIP onto another trainer" example is the shipped code, and builds what it ships."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from torch import nn

import clip
from engine.config import get_cfg_default
from engine.utils import Registry
from trainers import promptsrc_bmip
from trainers.bmip import build_bmip_prompts
from trainers.promptsrc import PromptSRC

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    section = (ROOT / "README.md").read_text().split("## Dropping BMIP onto another trainer", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_promptsrc_bmip_snippet_is_the_shipped_class_and_counts_its_parameters():
    snippet = readme_snippet()
    assert snippet in (ROOT / "trainers" / "promptsrc_bmip.py").read_text()
    namespace = {"TRAINER_REGISTRY": Registry("README"), "PromptSRC": PromptSRC, "nn": nn,
                 "build_bmip_prompts": build_bmip_prompts}
    exec(snippet, namespace)  # noqa: S102  (the README's own code)
    import train

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    tiny = clip.build_clip("random:tiny")
    host = SimpleNamespace(cfg=cfg, method_cfg=cfg.TRAINER.PROMPTSRC)

    def count(cls: type) -> int:
        learner = cls.build_prompt_learner(host, tiny)
        return sum(p.numel() for p in learner.parameters() if p.requires_grad)

    ours, shipped = count(namespace["PromptSRC_BMIP"]), count(promptsrc_bmip.PromptSRC_BMIP)
    assert ours == shipped
    # ... and the overrides are what make it PromptSRC's 4 tokens rather than BMIP's default 2.
    plain = build_bmip_prompts(tiny, cfg)
    assert sum(p.numel() for p in plain.parameters() if p.requires_grad) < shipped
    assert namespace["PromptSRC_BMIP"].build_prompt_learner(host, tiny).ctx_t.shape[0] == 4


def test_reproduce_guide_shows_the_shipped_promptsrc_bmip_and_the_documented_install():
    guide = (ROOT / "docs" / "REPRODUCE.md").read_text()
    section = guide.split("## 5. Dropping BMIP onto another trainer", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert snippet == readme_snippet() and snippet in (ROOT / "trainers" / "promptsrc_bmip.py").read_text()
    assert "pip install -r requirements.txt" not in guide and "pip install -e ." in guide
