"""The default config tree: every generic key that the engine, datasets and ``train.py`` read.

Method-specific subtrees (``TRAINER.<METHOD>``) and the family keys that Dassl itself never defined
(``DATASET.SUBSAMPLE_CLASSES``, ``MODEL.INIT_SEED`` ...) are added by ``train.py``'s ``extend_cfg``.
Dassl's DA/DG/SSL trainer subtrees are left out (no trainer of this project reads them), except
``TRAINER.ENTMIN`` and ``TRAINER.DOMAINMIX``, which Dassl's EntMin and DomainMix files read.
"""

from yacs.config import CfgNode as CN

_C = CN()

_C.VERSION = 1
# Directory for logs, checkpoints and tensorboard events.
_C.OUTPUT_DIR = "./output"
# Directory to resume from; empty means OUTPUT_DIR (Dassl always tries to resume).
_C.RESUME = ""
# A negative seed means "do not seed".
_C.SEED = -1
_C.USE_CUDA = True
# Device override: "" picks cuda when available and USE_CUDA, else cpu; otherwise a torch device string.
_C.DEVICE = ""
_C.VERBOSE = True

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
# Adam-family epsilon (torch's default); HiCroPL's modified Dassl added this key (its configs use 1e-3).
_C.OPTIM.EPS = 1e-8
# Staged LR: NEW_LAYERS (top-level children) get LR, the other children LR * BASE_LR_MULT.
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
# -1 or 0 means the step size is MAX_EPOCH (single_step only).
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
# Warmup is active when WARMUP_EPOCH > 0.
_C.OPTIM.WARMUP_EPOCH = -1
_C.OPTIM.WARMUP_TYPE = "linear"
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
# When True the scheduler after warmup starts from its own step 0.
_C.OPTIM.WARMUP_RECOUNT = True

_C.TRAIN = CN()
# Save a checkpoint every CHECKPOINT_FREQ epochs (0: only the last epoch).
_C.TRAIN.CHECKPOINT_FREQ = 0
_C.TRAIN.PRINT_FREQ = 10
# Only "train_x" is used by TrainerX.
_C.TRAIN.COUNT_ITER = "train_x"

_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"
# "last_step" or "best_val".
_C.TEST.FINAL_MODEL = "last_step"

_C.TRAINER = CN()
_C.TRAINER.NAME = ""
# Dassl's entropy-minimisation baseline (its files read the key from Dassl's default config).
_C.TRAINER.ENTMIN = CN()
_C.TRAINER.ENTMIN.LMDA = 1e-3
# Dassl's DomainMix (domain generalisation): mixing across "crossdomain" or "random" partners, weight ~ Beta.
_C.TRAINER.DOMAINMIX = CN()
_C.TRAINER.DOMAINMIX.TYPE = "crossdomain"
_C.TRAINER.DOMAINMIX.ALPHA = 1.0
_C.TRAINER.DOMAINMIX.BETA = 1.0
