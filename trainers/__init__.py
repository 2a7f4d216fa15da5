"""Prompt-learning trainers; importing this package registers them in ``TRAINER_REGISTRY``."""

from . import (  # noqa: F401
    bmip,
    cocoop,
    coop,
    coprompt,
    coprompt_bmip,
    ivlp,
    maple,
    promptsrc,
    promptsrc_bmip,
    vpt,
    zsclip,
)
