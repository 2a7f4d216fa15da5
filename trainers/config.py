"""Config subtrees of the prompt-learning methods: one small function per method.

``train.py``'s ``extend_cfg`` calls :func:`extend_trainer_cfg`, which applies every function listed in
``METHOD_CFG_FUNCTIONS``. To add a method, write ``add_<method>_cfg(cfg)`` below and append it there.
Defaults are those of the official ``train.py`` of CoOp/MaPLe/BMIP.
"""

from __future__ import annotations

from collections.abc import Callable

from yacs.config import CfgNode as CN

from engine.config import register_value_adapter

__all__ = [
    "KGCOOP_CTX_INIT",
    "METHOD_CFG_FUNCTIONS",
    "add_shared_cfg",
    "add_bmip_cfg",
    "add_cocoop_cfg",
    "add_coprompt_cfg",
    "add_coop_cfg",
    "add_ivlp_cfg",
    "add_maple_cfg",
    "add_promptsrc_cfg",
    "add_vpt_cfg",
    "add_mma_cfg",
    "add_clip_lora_cfg",
    "add_mmrl_cfg",
    "extend_trainer_cfg",
    "add_kgcoop_cfg",
    "add_tcp_cfg",
    "add_dept_cfg",
    "add_hicropl_cfg",
]


# KgCoOp (and the repositories built on it) declare ``TRAINER.COOP.CTX_INIT`` as a bool, True meaning
# "initialise the context from these words": its shipped YAMLs say ``CTX_INIT: True``. Merged into our
# string key, True becomes those words and False the random initialisation ("").
KGCOOP_CTX_INIT = "a photo of a"
for _key in ("TRAINER.COOP.CTX_INIT", "TRAINER.COCOOP.CTX_INIT"):
    register_value_adapter(_key, bool, str, lambda value: KGCOOP_CTX_INIT if value else "")


def add_shared_cfg(cfg: CN) -> None:
    """Keys of the shared trainer (``trainers/base.py``) that every method reads."""
    # True wraps the frozen towers' encoders in torch.compile once at build time (docs/PERFORMANCE.md).
    cfg.MODEL.COMPILE = False


def add_coop_cfg(cfg: CN) -> None:
    """CoOp: ``TRAINER.COOP``."""
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation words
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, fp32, amp, amp_bf16, fp64 (trainers/base.py)
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # middle, end, front


def add_cocoop_cfg(cfg: CN) -> None:
    """CoCoOp: ``TRAINER.COCOOP``."""
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"


def add_vpt_cfg(cfg: CN) -> None:
    """VPT (deep vision prompting, MaPLe repository): ``TRAINER.VPT``."""
    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2  # prompt tokens per vision block
    cfg.TRAINER.VPT.CTX_INIT = "a photo of a"  # the fixed text prompt "<CTX_INIT> <class>."
    cfg.TRAINER.VPT.PREC = "fp16"  # fp16, fp32, amp, amp_bf16 (trainable tensors fp32), fp64 (all fp64)
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1  # blocks 0..J-1 get prompts (1 = input only)


def add_ivlp_cfg(cfg: CN) -> None:
    """IVLP (independent V-L deep prompts; language-only with vision depth 0): ``TRAINER.IVLP``."""
    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"
    cfg.TRAINER.IVLP.PREC = "fp16"
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # 0 = no vision prompts (language-only deep prompting)
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9


def add_maple_cfg(cfg: CN) -> None:
    """MaPLe (one-way text->vision coupling): ``TRAINER.MAPLE``."""
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
    cfg.TRAINER.MAPLE.PREC = "fp16"
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9
    # MaPLe-dagger: > 0 turns every 512->768 coupling into a 512-h-768 GELU MLP (581 matches BMIP's
    # per-layer parameter count, docs/METHODS.md); 0 = Linear, the released MaPLe.
    cfg.TRAINER.MAPLE.COUPLING_HIDDEN = 0
    # True: draw from the seed as the release does (its CLIP is built from random init first), so a seed
    # gives the release's initial prompts (prompting/release_draws.py; on in the official configs).
    cfg.TRAINER.MAPLE.RELEASE_DRAWS = False


def add_bmip_cfg(cfg: CN) -> None:
    """BMIP: ``TRAINER.BMIP`` and the release's ``SHARE`` node (docs/BMIP.md explains every key).

    Behaviour options default to None = "take the value of ``TRAINER.BMIP.PRESET``"; a set value wins.
    """
    cfg.TRAINER.BMIP = CN()
    cfg.TRAINER.BMIP.N_CTX = 2
    cfg.TRAINER.BMIP.CTX_INIT = "a photo of a"
    cfg.TRAINER.BMIP.PREC = "fp16"
    cfg.TRAINER.BMIP.PROMPT_DEPTH = 9
    # "None" = BMIP's gated mix; "add", "atten", "joint" = the aggregation ablations (paper Table 5).
    cfg.TRAINER.BMIP.CONNECT_METHOD = "None"
    cfg.TRAINER.BMIP.WEIGHT_THRESHOLD = 0.0025  # read by the release but unused there; kept for its YAMLs
    cfg.TRAINER.BMIP.PRESET = "released"  # released | paper
    cfg.TRAINER.BMIP.TEXT_ATTN_QUERY = None  # sos | eot | mean_valid
    cfg.TRAINER.BMIP.ATTN_REDUCE = None  # batch_mean | per_sample
    cfg.TRAINER.BMIP.TEXT_DEPTH_OFFSET = None  # 1 | 0
    cfg.TRAINER.BMIP.FIRST_VISION_PROMPT = None  # proj_text | own | combine
    cfg.TRAINER.BMIP.GATE_ACT = None  # sigmoid | none
    cfg.TRAINER.BMIP.DETACH_ATTN = None  # True | False
    cfg.TRAINER.BMIP.ADD_MODE = None  # lists | sum (CONNECT_METHOD add)
    # With SHARE.SHARE_PARAMETER_VISUAL True: tied (one tensor, paper) | aliased (the release on CPU: one
    # optimiser entry per block over one storage) | copies (the release on a GPU: one tensor per block,
    # all starting equal). docs/BMIP.md, "Shared vision prompt".
    cfg.TRAINER.BMIP.SHARED_VISION_PROMPT = None
    # Early stopping as released: reset patience on any gain, stop after TRAIN.PATIENT_COUNT epochs
    # without one once this many epochs ran, save model-best only for a gain above BEST_MIN_DELTA points.
    cfg.TRAINER.BMIP.EARLY_STOP_MIN_EPOCH = 6
    cfg.TRAINER.BMIP.BEST_MIN_DELTA = 0.01
    # True reproduces the release: validation, early stopping and model-best run only when
    # TEST.NO_TEST_EARLY is False (its default True then leaves no model-best for best_val to load).
    cfg.TRAINER.BMIP.VAL_REQUIRES_NO_TEST_EARLY = False
    # True (released preset configs): a seed gives the release's initial prompts and gates, drawn in its
    # order (its CLIP, gates included, then its learner; prompting/release_draws.py). BMIP trainer only.
    cfg.TRAINER.BMIP.RELEASE_DRAWS = False
    if "SHARE" not in cfg:
        cfg.SHARE = CN()
    cfg.SHARE.SHARE_PARAMETER_VISUAL = None  # True: one vision deep prompt + one F_l; False: per layer
    cfg.SHARE.SHARE_PARAMETER_TEXT = None  # True: one F_v; False: per-layer F_v


def add_promptsrc_cfg(cfg: CN) -> None:
    """PromptSRC (and PromptSRC_BMIP): ``TRAINER.PROMPTSRC`` (docs/METHODS.md, PromptSRC)."""
    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4  # PromptSRC_BMIP: the prompt count of both towers
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25.0  # L1(prompted, frozen) class features
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10.0  # L1(prompted, frozen) image features
    cfg.TRAINER.PROMPTSRC.KL_LOSS_WEIGHT = 1.0  # KL(frozen || prompted) logits; fixed to 1 in the release
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15.0  # Gaussian prompt aggregation over epochs 1..MAX_EPOCH
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1.0
    # Templates the frozen text features are averaged over: promptsrc60 (PromptSRC) | imagenet80 (BMIP's).
    cfg.TRAINER.PROMPTSRC.TEACHER_TEMPLATES = "promptsrc60"
    # PromptSRC_BMIP only, as released: its prompt depth (PROMPT_DEPTH_VISION/TEXT do not apply) and
    # its interaction ("None" = BMIP's gate; add/atten/joint = the ablations).
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH = 9
    cfg.TRAINER.PROMPTSRC.CONNECT_METHOD = "None"


def add_coprompt_cfg(cfg: CN) -> None:
    """CoPrompt (and CoPrompt_BMIP): ``TRAINER.CoPrompt``, ``TRAINER.W``, ``TRAINER.DISTILL``."""
    cfg.TRAINER.CoPrompt = CN()
    cfg.TRAINER.CoPrompt.N_CTX = 2
    cfg.TRAINER.CoPrompt.CTX_INIT = "a photo of a"
    cfg.TRAINER.CoPrompt.PREC = "fp16"
    cfg.TRAINER.CoPrompt.PROMPT_DEPTH = 9
    # True (released): the per-dataset table (trainers/coprompt.py) replaces N_CTX, PROMPT_DEPTH, TRAINER.W
    # and Food101's OPTIM.MAX_EPOCH after every other config source; False keeps the configured values.
    cfg.TRAINER.CoPrompt.DATASET_TABLE = True
    # Class descriptions: DESCRIPTION_FILE if set, else <DESCRIPTIONS_DIR>/<dataset stem>_prompt.json;
    # an empty DESCRIPTIONS_DIR means the project's datasets/descriptions folder.
    cfg.TRAINER.CoPrompt.DESCRIPTIONS_DIR = ""
    cfg.TRAINER.CoPrompt.DESCRIPTION_FILE = ""
    cfg.TRAINER.CoPrompt.IMAGE_ADAPTER_RATIO = 0.1  # f <- 0.9 f + 0.1 A(f)
    cfg.TRAINER.CoPrompt.TEXT_ADAPTER_RATIO = 0.2  # g <- 0.8 g + 0.2 A(g)
    cfg.TRAINER.CoPrompt.ADAPTER_REDUCTION = 4  # adapter bottleneck D / 4
    cfg.TRAINER.W = 8.0  # weight of the consistency terms
    cfg.TRAINER.DISTILL = "cosine"  # cosine | mse


def add_mma_cfg(cfg: CN) -> None:
    """MMA (and MMA_BMIP): ``TRAINER.MMADAPTER``; defaults of the release's train.py (docs/METHODS.md)."""
    cfg.TRAINER.MMADAPTER = CN()
    cfg.TRAINER.MMADAPTER.TEXT_CTX_INIT = ""  # class prompts "<TEXT_CTX_INIT> <class>."
    cfg.TRAINER.MMADAPTER.PREC = "amp"  # fp16, fp32, amp, amp_bf16
    cfg.TRAINER.MMADAPTER.ADAPTER_START = 4  # first adapted block, 1-based
    cfg.TRAINER.MMADAPTER.ADAPTER_END = 12  # last adapted block, 1-based
    cfg.TRAINER.MMADAPTER.ADAPTER_DIM = 32  # bottleneck width (= the shared projection's width)
    cfg.TRAINER.MMADAPTER.ADAPTER_SCALE = 0.1  # s in out = block(x) + s * adapter(x)
    # True (released): the adapters' parameters get their gradient divided by ADAPTER_SCALE.
    cfg.TRAINER.MMADAPTER.GRAD_RESCALE = True


def add_clip_lora_cfg(cfg: CN) -> None:
    """CLIP-LoRA: ``TRAINER.CLIP_LORA``; defaults of the release's run_utils.py (docs/METHODS.md)."""
    cfg.TRAINER.CLIP_LORA = CN()
    cfg.TRAINER.CLIP_LORA.PREC = "amp"  # fp16, fp32, amp, amp_bf16 (the release trains under fp16 autocast)
    cfg.TRAINER.CLIP_LORA.ENCODER = "both"  # text | vision | both
    cfg.TRAINER.CLIP_LORA.POSITION = "all"  # blocks: all, bottom, mid, up, half-up, half-bottom, top3
    cfg.TRAINER.CLIP_LORA.PARAMS = ["q", "k", "v"]  # adapted attention projections
    cfg.TRAINER.CLIP_LORA.R = 2  # rank
    cfg.TRAINER.CLIP_LORA.ALPHA = 1.0
    cfg.TRAINER.CLIP_LORA.DROPOUT_RATE = 0.25  # dropout on the LoRA input, training only
    cfg.TRAINER.CLIP_LORA.RANK_SCALING = "sqrt_rank"  # sqrt_rank: alpha / sqrt(r) (released) | rank: alpha / r
    # Training length in iterations per shot (the release runs N_ITERS * NUM_SHOTS iterations with a
    # per-iteration cosine schedule); 0 = OPTIM.MAX_EPOCH epochs with the engine's per-epoch schedule.
    cfg.TRAINER.CLIP_LORA.N_ITERS = 500
    cfg.TRAINER.CLIP_LORA.ETA_MIN = 1e-6  # the per-iteration cosine schedule's final LR
    cfg.TRAINER.CLIP_LORA.LOGIT_SCALE = 100.0  # the release's fixed logit scale; 0 = exp(CLIP's logit_scale)
    # Class prompt: the release's one template for every dataset; "coop" = CoOp's per-dataset template.
    cfg.TRAINER.CLIP_LORA.TEMPLATE = "a photo of a {}."


def add_mmrl_cfg(cfg: CN) -> None:
    """MMRL: ``TRAINER.MMRL``; defaults of the release's train.py (docs/METHODS.md)."""
    cfg.TRAINER.MMRL = CN()
    cfg.TRAINER.MMRL.ALPHA = 0.7  # weight of the CLS head (1 - ALPHA: the representation head)
    cfg.TRAINER.MMRL.REG_WEIGHT = 1.0  # weight of the two cosine consistency terms
    cfg.TRAINER.MMRL.REP_LAYERS = [6, 7, 8, 9, 10, 11, 12]  # 1-based blocks receiving the tokens
    cfg.TRAINER.MMRL.REP_DIM = 512  # width of the shared representation space
    cfg.TRAINER.MMRL.N_REP_TOKENS = 5
    cfg.TRAINER.MMRL.PREC = "fp16"  # fp16, fp32, amp, amp_bf16
    # True (released): REG_WEIGHT (and EuroSAT's REP_DIM) per dataset, under the command line (trainers/mmrl.py).
    cfg.TRAINER.MMRL.DATASET_TABLE = True
    # Evaluation head: fusion (default: one head for every label space) | cls | rep | by_label_space
    # (the release: fused on the training classes, CLS elsewhere, decided by TASK and the label space;
    # the MMRL and MMRL_BMIP configs set it).
    cfg.TRAINER.MMRL.TEST_HEAD = "fusion"
    cfg.TRAINER.MMRL.TASK = "B2N"  # B2N | CD | FS (the release's top-level TASK; read by by_label_space)


def add_kgcoop_cfg(cfg: CN) -> None:
    """KgCoOp: ``TRAINER.KGCOOP`` (docs/METHODS.md, KgCoOp; the release reads these from TRAINER.COOP)."""
    cfg.TRAINER.KGCOOP = CN()
    cfg.TRAINER.KGCOOP.N_CTX = 4
    cfg.TRAINER.KGCOOP.CSC = False
    # The release's CTX_INIT is a flag: any true value means the hard-coded "a photo of a".
    cfg.TRAINER.KGCOOP.CTX_INIT = "a photo of a"
    cfg.TRAINER.KGCOOP.PREC = "fp16"
    cfg.TRAINER.KGCOOP.CLASS_TOKEN_POSITION = "end"
    cfg.TRAINER.KGCOOP.W = 8.0  # weight of the knowledge-guided term (the release's scripts pass 8.0)
    cfg.TRAINER.KGCOOP.TEMPLATE = ""  # hand-crafted template; "" = the per-dataset KGCOOP_TEMPLATES


def add_tcp_cfg(cfg: CN) -> None:
    """TCP: ``TRAINER.TCP`` (docs/METHODS.md, TCP)."""
    cfg.TRAINER.TCP = CN()
    cfg.TRAINER.TCP.N_CTX = 4  # context tokens = class-aware tokens per class
    cfg.TRAINER.TCP.CTX_INIT = ""  # released: random N(0, 0.02^2) context
    cfg.TRAINER.TCP.PREC = "fp16"
    cfg.TRAINER.TCP.W = 8.0  # knowledge-guided weight (hard-coded 8.0 in the release; its COOP.W is unused)
    cfg.TRAINER.TCP.CLASS_LAYER = 8  # text block the class-aware tokens enter before
    cfg.TRAINER.TCP.MIX = 1.0  # class-aware share of the slot tokens there (hard-coded 1.0 in the release)
    cfg.TRAINER.TCP.META_REDUCTION = 4  # meta-net hidden width = embed_dim // META_REDUCTION
    cfg.TRAINER.TCP.ADAM_EPS = 1e-3  # the release's Dassl edit (Adam eps 1e-8 -> 1e-3)
    cfg.TRAINER.TCP.TEMPLATE = ""  # class-knowledge template; "" = the per-dataset TCP_TEACHER_TEMPLATES
    cfg.TRAINER.TCP.PROMPT_TEMPLATE = ""  # text after the context slots; "" = TCP_PROMPT_TEMPLATES


def add_dept_cfg(cfg: CN) -> None:
    """DePT's CAT head over any host trainer (``<Host>_DePT``): ``TRAINER.DEPT`` (docs/METHODS.md, DePT).

    The release's names: LINEAR_PROBE.WEIGHT, OPTIM.LR_EXP, LINEAR_PROBE.TEST_TIME_FUSION, FILM.LINEAR_PROBE.
    """
    cfg.TRAINER.DEPT = CN()
    cfg.TRAINER.DEPT.WEIGHT = 0.7  # lambda: loss (1 - w) CE_itm + w CE_cat; test (1 - w) s_itm + w s_cat
    cfg.TRAINER.DEPT.LR_MULT = 6.5  # the head's learning rate = OPTIM.LR * LR_MULT
    cfg.TRAINER.DEPT.TEST_TIME_FUSION = True  # False: the head's logits alone for the classes it knows
    cfg.TRAINER.DEPT.FILM = True  # channel-wise scale/shift before the head's classifier
    # How classes the head knows and classes it does not are scored together (all classes):
    # per_class (honest: fused logits for the head's classes, the host's for the rest) | similarity (the
    # host's logits for every class) | oracle (the release's base/new-aware choice: images of classes the
    # head does not know get the host's logits; needs the test labels, so not an open-world result).
    cfg.TRAINER.DEPT.ALL_CLASSES_HEAD = "per_class"
    # False (released): the head is used on its own dataset and, trained on ImageNet, on its variants;
    # True: on any dataset, for the classes whose names it knows.
    cfg.TRAINER.DEPT.CROSS_DATASET_HEAD = False


def add_hicropl_cfg(cfg: CN) -> None:
    """HiCroPL: ``TRAINER.HICROPL`` (defaults of the release's train.py; docs/METHODS.md, HiCroPL).

    Behaviour options default to None = "take the value of ``PRESET``"; a set value wins.
    """
    cfg.TRAINER.HICROPL = CN()
    cfg.TRAINER.HICROPL.N_CTX = 2
    cfg.TRAINER.HICROPL.CROSS_LAYER = 6  # k: text -> vision in blocks 0..k-1, vision -> text in k..depth-1
    cfg.TRAINER.HICROPL.CTX_INIT = "a photo of a"  # used only when N_CTX <= its token count (4)
    cfg.TRAINER.HICROPL.PREC = "fp16"
    cfg.TRAINER.HICROPL.PROMPT_DEPTH = 9
    cfg.TRAINER.HICROPL.LAMBD = 10.0  # weight of the two distillation terms (the released YAMLs use 12)
    # "" or MODEL.BACKBONE.NAME: the frozen image features are the backbone's own (the release loads a copy).
    cfg.TRAINER.HICROPL.TEACHER_NAME = ""
    cfg.TRAINER.HICROPL.PRESET = "released"  # released | paper
    cfg.TRAINER.HICROPL.MAPPING = None  # write_back (released) | graph (paper)
    cfg.TRAINER.HICROPL.SHARED_INIT = None  # True (released): one draw for all layers' vision prompts / proxies
    # Class descriptions: DESCRIPTION_FILE if set, else <DESCRIPTIONS_DIR>/<dataset stem>_prompt.json;
    # an empty DESCRIPTIONS_DIR means the project's datasets/descriptions folder.
    cfg.TRAINER.HICROPL.DESCRIPTIONS_DIR = ""
    cfg.TRAINER.HICROPL.DESCRIPTION_FILE = ""


METHOD_CFG_FUNCTIONS: list[Callable[[CN], None]] = [
    add_shared_cfg,
    add_coop_cfg,
    add_cocoop_cfg,
    add_vpt_cfg,
    add_ivlp_cfg,
    add_maple_cfg,
    add_bmip_cfg,
    add_promptsrc_cfg,
    add_coprompt_cfg,
    add_mma_cfg,
    add_clip_lora_cfg,
    add_mmrl_cfg,
    add_kgcoop_cfg,
    add_tcp_cfg,
    add_dept_cfg,
    add_hicropl_cfg,
]


def extend_trainer_cfg(cfg: CN) -> None:
    """Add every method's ``TRAINER.<METHOD>`` subtree (and other method-owned keys, ``MODEL.COMPILE``) to ``cfg``."""
    for add_cfg in METHOD_CFG_FUNCTIONS:
        add_cfg(cfg)
