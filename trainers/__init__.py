"""Prompt-learning trainers; importing this package registers them in ``TRAINER_REGISTRY``."""

from . import (  # noqa: F401
    bmip,
    clip_lora,
    cocoop,
    coop,
    coprompt,
    coprompt_bmip,
    ivlp,
    maple,
    mma,
    mma_bmip,
    mmrl,
    promptsrc,
    promptsrc_bmip,
    vpt,
    zsclip,
)
