"""Building blocks every prompt method shares: class prompts, deep prompt placement, interactions.

* :mod:`prompting.text` - context init from ``CTX_INIT`` and tokenised class prompts (prefix/suffix);
* :mod:`prompting.deep` - per-block prompt plans and the CLIP hook that writes them into the slots;
* :mod:`prompting.interaction` - how modalities talk per layer (BMIP gate, ablation combiners);
* :mod:`prompting.learners` - IVLP / VPT / language-only and MaPLe prompt learners;
* :mod:`prompting.bmip` - BMIP's learner, options and presets;
* :mod:`prompting.model` - :class:`PromptedCLIP`, the frozen CLIP driven by a learner.
"""

from .bmip import BMIPOptions, BMIPPrompts, resolve_bmip_options
from .deep import FixedPrompt, PromptPlan, SlotView, deep_blocks, prompt_hook
from .interaction import GatedMix, GateMonitor, SlotAttention
from .learners import CoupledPrompts, IndependentPrompts
from .model import PromptedCLIP
from .text import ClassPrompts, assemble_prompts, init_context, tokenize_class_prompts

__all__ = [
    "BMIPOptions",
    "BMIPPrompts",
    "ClassPrompts",
    "CoupledPrompts",
    "FixedPrompt",
    "GateMonitor",
    "GatedMix",
    "IndependentPrompts",
    "PromptPlan",
    "PromptedCLIP",
    "SlotAttention",
    "SlotView",
    "assemble_prompts",
    "deep_blocks",
    "init_context",
    "prompt_hook",
    "resolve_bmip_options",
    "tokenize_class_prompts",
]
