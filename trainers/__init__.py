"""Prompt-learning trainers; importing this package registers them in ``TRAINER_REGISTRY``."""

from . import (  # noqa: F401
    bmip,
    cocoop,
    coop,
    coprompt,
    coprompt_bmip,
    dept,
    ivlp,
    kgcoop,
    maple,
    promptsrc,
    promptsrc_bmip,
    tcp,
    vpt,
    zsclip,
)
