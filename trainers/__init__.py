"""Prompt-learning trainers; importing this package registers them in ``TRAINER_REGISTRY``.

They register as built-ins: a trainer file from outside that registers the same name (the official
``coop.py`` registering ``CoOp``) takes the name over, with a note (docs/DASSL_COMPAT.md).
"""

from engine.engine import TRAINER_REGISTRY

with TRAINER_REGISTRY.builtins():
    from . import (  # noqa: F401
        bmip,
        clip_lora,
        cocoop,
        coop,
        coprompt,
        coprompt_bmip,
        dept,
        hicropl,
        ivlp,
        kgcoop,
        maple,
        mma,
        mma_bmip,
        mmrl,
        mmrl_bmip,
        promptsrc,
        promptsrc_bmip,
        tcp,
        vpt,
        zsclip,
    )
