"""Template-method trainers with Dassl's lifecycle, log lines and checkpoint layout.

A method subclasses ``TrainerX``, registers it with ``@TRAINER_REGISTRY.register()`` and fills in
``build_model`` (calling ``register_model``) and ``forward_backward`` (calling ``update_lr`` after
the last batch of an epoch). Everything else - data, evaluation, checkpoints, resume, logging - is here.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from engine.data import DataManager
from engine.evaluation import build_evaluator
from engine.modeling import SimpleNet  # also where Dassl's generic trainers import it from
from engine.optim.prograd import project_conflicting_gradient
from engine.utils import (
    AverageMeter,
    CheckpointError,
    MetricMeter,
    crash_point,
    get_rng_state,
    has_checkpoint,
    load_checkpoint,
    load_state_dict_checked,
    remove_stray_temp_files,
    resume_from_checkpoint,
    save_checkpoint,
    tolist_if_not,
)

__all__ = ["TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU"]

_BEST_FILE = "model-best.pth.tar"
EPOCH_TAG = "train/epoch"  # 1-based epoch at each epoch's last step: maps TensorBoard steps to epochs


# Scheduler state entries that define the schedule (not the progress along it), also in a warmup's successor.
_SCHEDULE_KEYS = ("T_max", "eta_min", "step_size", "milestones", "gamma", "warmup_epoch")


def _schedule(sched: Any) -> dict[str, Any]:
    """The schedule-defining entries of ``sched``'s state (``successor.<key>`` for a warmup's successor)."""
    if sched is None:
        return {}
    state = sched.state_dict()
    found = {k: state[k] for k in _SCHEDULE_KEYS if k in state}
    successor = state.get("successor_state", state.get("successor"))  # older engine files: "successor"
    if isinstance(successor, dict):
        found.update({f"successor.{k}": successor[k] for k in _SCHEDULE_KEYS if k in successor})
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in found.items()}


def _format_val_result(val_result: float | None) -> str:
    return "n/a" if val_result is None else f"{val_result:.1f}"


def _progress(iterable: Iterable, desc: str) -> Iterable:
    """A tqdm bar on stderr (never in log.txt); silent when stderr is not a terminal."""
    return tqdm(iterable, desc=desc, leave=False, file=sys.stderr, disable=None, dynamic_ncols=True)


class TrainerBase:
    """Registered models with their optimizers and schedulers, checkpointing and the epoch loop."""

    def __init__(self) -> None:
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._optims: OrderedDict[str, Any] = OrderedDict()
        self._scheds: OrderedDict[str, Any] = OrderedDict()
        self._trainable_only: dict[str, bool] = {}
        self._writer: Any = None
        # (where, summary) of the last training step whose reported values were all finite.
        self._last_finite: tuple[str, dict[str, float]] | None = None

    # ------------------------------------------------------------------ models
    def register_model(
        self,
        name: str = "model",
        model: nn.Module | None = None,
        optim: Any = None,
        sched: Any = None,
        trainable_only: bool = False,
    ) -> None:
        """Register a model (with its optimizer and scheduler) for saving, loading, mode switches and LR steps.

        ``trainable_only=True`` makes checkpoints hold only the parameters with ``requires_grad``
        (e.g. the prompt learner of a frozen CLIP); loading such a checkpoint is then non-strict for
        missing keys. For other filters override :meth:`model_state_dict`.
        """
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot register a model before TrainerBase.__init__() has run")
        if name in self._models:
            raise KeyError(f'A model named "{name}" is already registered')
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched
        self._trainable_only[name] = trainable_only

    def get_model_names(self, names: str | list[str] | None = None) -> list[str]:
        real = list(self._models.keys())
        if names is None:
            return real
        names = tolist_if_not(names)
        for name in names:
            if name not in real:
                raise KeyError(f'No registered model named "{name}"; registered: {real}')
        return names

    def model_state_dict(self, name: str) -> OrderedDict:
        """The tensors saved for model ``name``: the full state dict, or only trainable parameters.

        Trainers may override this hook to save a custom subset; loading stays non-strict for missing
        keys only when the model was registered with ``trainable_only=True``.
        """
        model = self._models[name]
        state = model.state_dict()
        if not self._trainable_only.get(name, False):
            return state
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        return OrderedDict((k, v) for k, v in state.items() if k in trainable)

    def _strict(self, name: str) -> bool:
        return not self._trainable_only.get(name, False)

    def save_model(
        self,
        epoch: int,
        directory: str,
        is_best: bool = False,
        val_result: float | None = None,
        model_name: str = "",
    ) -> None:
        """Save every registered model to ``directory/<name>/`` (``model.pth.tar-<epoch+1>`` by default).

        Contents: ``state_dict``, ``epoch``, ``optimizer``, ``scheduler``, ``val_result`` and the random
        streams (``rng_state``), all tensors or plain values.
        """
        rng_state = get_rng_state()
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self.model_state_dict(name),
                    "epoch": epoch + 1,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": None if val_result is None else float(val_result),
                    "rng_state": rng_state,
                },
                os.path.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume all models from ``directory`` if each has a checkpoint; return the start epoch.

        Temporary files of a save that a kill interrupted are removed first. A folder holding no checkpoint
        at all (a run killed before, or while, writing its first one) trains from scratch, saying so. A
        checkpoint whose LR schedule differs from this run's (e.g. another ``OPTIM.MAX_EPOCH``) is refused.
        """
        names = self.get_model_names()
        folders = {name: os.path.join(directory, name) for name in names}
        for folder in folders.values():
            stray = remove_stray_temp_files(folder)
            if stray:
                print(f'Removed {len(stray)} temporary file(s) of an interrupted checkpoint save in "{folder}"')
        present = [name for name in names if has_checkpoint(folders[name])]
        if not present:
            if any(os.path.isdir(f) for f in folders.values()):
                print(f'No complete checkpoint in "{directory}" (killed before its first save?), train from scratch')
            else:
                print("No checkpoint found, train from scratch")
            return 0
        if len(present) < len(names):
            missing = [name for name in names if name not in present]
            raise CheckpointError(
                f'"{directory}" has checkpoints for {present} but none for {missing}; the run cannot be '
                "resumed consistently. Delete the folder to train from scratch."
            )
        print(f'Found checkpoint at "{directory}" (will resume training)')
        planned = {name: _schedule(self._scheds[name]) for name in names}
        epochs = {
            name: resume_from_checkpoint(
                folders[name],
                self._models[name],
                self._optims[name],
                self._scheds[name],
                strict=self._strict(name),
            )
            for name in names
        }
        if len(set(epochs.values())) > 1:
            raise CheckpointError(
                f'The checkpoints in "{directory}" are from different epochs ({epochs}); the run cannot be '
                "resumed consistently. Delete the newer ones or the whole folder."
            )
        for name in names:
            saved = _schedule(self._scheds[name])
            diffs = [f"{k} {saved.get(k)}, this run {v}" for k, v in planned[name].items() if saved.get(k) != v]
            if diffs:
                raise ValueError(
                    f'Cannot resume "{folders[name]}" (epoch {epochs[name]}): it was trained with another LR '
                    f"schedule ({'; '.join(diffs)}: another OPTIM.MAX_EPOCH or OPTIM.LR_SCHEDULER setting?). "
                    "Continuing would follow the old schedule (a finished cosine schedule trains at lr 0). "
                    "Use a new --output-dir, or repeat the settings the folder was trained with."
                )
        return epochs[names[-1]]

    @staticmethod
    def model_path(directory: str, name: str, epoch: int | None = None) -> str:
        """The checkpoint ``load_model`` reads for model ``name``: the best one, or that of ``epoch``."""
        return os.path.join(directory, name, _BEST_FILE if epoch is None else f"model.pth.tar-{epoch}")

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) of every registered model."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name in self.get_model_names():
            model_path = self.model_path(directory, name, epoch)
            if not os.path.exists(model_path):
                folder = os.path.dirname(model_path)
                present = sorted(n for n in os.listdir(folder) if n.startswith("model")) if os.path.isdir(folder) else []
                raise FileNotFoundError(
                    f'Model not found at "{model_path}" (that folder holds: {", ".join(present) or "nothing"})'
                )
            checkpoint = load_checkpoint(model_path)
            print(
                f"Load {model_path} to {name} (epoch={checkpoint['epoch']}, "
                f"val_result={_format_val_result(checkpoint.get('val_result'))})"
            )
            load_state_dict_checked(self._models[name], checkpoint["state_dict"], self._strict(name), model_path)

    def set_model_mode(self, mode: str = "train", names: str | list[str] | None = None) -> None:
        """Switch only the registered models (a frozen CLIP kept outside them stays as it is)."""
        if mode not in ("train", "test", "eval"):
            raise KeyError(f'Unknown model mode "{mode}"; expected train, test or eval')
        for name in self.get_model_names(names):
            self._models[name].train(mode == "train")

    def update_lr(self, names: str | list[str] | None = None) -> None:
        """Step the schedulers; the family calls this once per epoch, after the last batch."""
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        """Stop on a non-finite loss, naming the step and the last finite values (Dassl only said NaN)."""
        if torch.isfinite(loss).all():
            return
        where = self._step_name()
        if self._last_finite is None:
            last = "no earlier step had finite values"
        else:
            step, summary = self._last_finite
            last = f"last finite values at {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
        raise FloatingPointError(
            f"Loss is {loss.detach().float().flatten()[0].item()} at {where}; {last}. Training stopped: "
            "lower OPTIM.LR or check the inputs"
        )

    def _step_name(self) -> str:
        if not hasattr(self, "batch_idx"):
            return "the first step"
        return (
            f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{self.num_batches}]"
        )

    def _note_finite_step(self, summary: dict[str, Any]) -> None:
        values = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float, torch.Tensor))}
        if all(math.isfinite(v) for v in values.values()):
            self._last_finite = (self._step_name(), values)

    # ------------------------------------------------------------------ tensorboard
    def init_writer(self, log_dir: str, purge_step: int | None = None) -> None:
        """Create the tensorboard writer once; without the tensorboard package, scalars are dropped.

        ``purge_step``: a resumed run's first step; TensorBoard then drops the interrupted run's events
        from that step on, so redone steps are not shown twice.
        """
        if self._writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("Note: tensorboard is not installed; scalars are not written")
            return
        print(f"Initialize tensorboard (log_dir={log_dir})")
        if purge_step is not None:
            print(f"TensorBoard: events of the interrupted run from step {purge_step} on are replaced")
        self._writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def writes_scalars(self) -> bool:
        """Whether scalars reach TensorBoard (not in eval-only runs, nor without the package)."""
        return self._writer is not None

    def write_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    # ------------------------------------------------------------------ loop
    def train(self, start_epoch: int, max_epoch: int) -> None:
        """Generic loop; the range is taken after ``before_train`` so a resumed start epoch applies."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for epoch in range(self.start_epoch, self.max_epoch):
            self.epoch = epoch
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def run_epoch(self) -> None:
        raise NotImplementedError

    def test(self, split: str | None = None) -> float:
        raise NotImplementedError

    def parse_batch_train(self, batch: dict[str, Any]) -> Any:
        raise NotImplementedError

    def parse_batch_test(self, batch: dict[str, Any]) -> Any:
        raise NotImplementedError

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def model_zero_grad(self, names: str | list[str] | None = None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names: str | list[str] | None = None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss: torch.Tensor, names: str | list[str] | None = None) -> None:
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    def prograd_backward_and_update(
        self, loss_a: torch.Tensor, loss_b: torch.Tensor, lambda_: float = 1.0, names: str | list[str] | None = None
    ) -> None:
        """One optimizer step on ``loss_a`` whose gradient, per parameter tensor, loses ``lambda_`` times its
        component against ``loss_b``'s gradient where they conflict (ProGrad; the method the Dassl forks of
        ProGrad and KgCoOp add, so their ProGrad trainers run here; ``engine.optim.prograd``)."""
        names = self.get_model_names(names)
        self.model_zero_grad(names)
        params = [p for name in names for p in self._models[name].parameters() if p.requires_grad]
        self.detect_anomaly(loss_b)
        guides = torch.autograd.grad(loss_b, params, retain_graph=True, allow_unused=True)
        self.model_backward(loss_a)
        for param, guide in zip(params, guides):
            if param.grad is not None and guide is not None:
                param.grad = project_conflicting_gradient(param.grad, guide, lambda_)
        self.model_update(names)


def _select_device(cfg: Any) -> torch.device:
    """``cfg.DEVICE`` when set, else cuda if available and ``USE_CUDA``, else cpu."""
    requested = cfg.get("DEVICE", "")
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as e:
            raise ValueError(f'DEVICE "{requested}" is not a valid torch device: {e}') from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f'DEVICE "{requested}" was requested but CUDA is not available (use "cpu" or "")')
        return device
    if torch.cuda.is_available() and cfg.USE_CUDA:
        return torch.device("cuda")
    return torch.device("cpu")


class SimpleTrainer(TrainerBase):
    """Data, evaluator, checkpoint policy (last_step / best_val) and testing around the base loop."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.check_cfg(cfg)
        self.device = _select_device(cfg)
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        # The dataset is built (consuming python `random`) before the model (consuming torch RNG).
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg: Any) -> None:
        """Hook: validate config values this trainer depends on."""

    def build_data_loader(self) -> None:
        """Create the DataManager and expose its loaders and label space as attributes."""
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self) -> None:
        """Dassl's default: a ``SimpleNet`` (``MODEL.BACKBONE``/``HEAD``) registered as ``model``; CLIP trainers override it."""
        from engine.optim import build_lr_scheduler, build_optimizer
        from engine.utils import count_num_param, load_pretrained_weights

        cfg = self.cfg
        print("Building model")
        self.model = SimpleNet(cfg, cfg.MODEL, self.num_classes)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        print(f"# params: {count_num_param(self.model):,}")
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def train(self) -> None:  # type: ignore[override]
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self) -> None:
        directory = self.cfg.RESUME or self.output_dir
        if self.cfg.RESUME and not any(
            has_checkpoint(os.path.join(directory, name)) for name in self.get_model_names()
        ):
            raise FileNotFoundError(
                f'RESUME (--resume) "{directory}" holds no checkpoint (expected <folder>/<model name>/checkpoint '
                f"for {self.get_model_names()}); drop --resume to train from scratch"
            )
        self.start_epoch = self.resume_model_if_exist(directory)
        if self.start_epoch > 0:
            self._restore_best_result(directory)
        writer_dir = os.path.join(self.output_dir, "tensorboard")
        os.makedirs(writer_dir, exist_ok=True)
        self.init_writer(writer_dir, self.start_epoch * self.steps_per_epoch() if self.start_epoch > 0 else None)
        self.time_start = time.time()

    def steps_per_epoch(self) -> int:
        """Training iterations per epoch: the unit of TensorBoard's step axis."""
        loader = getattr(self, "train_loader_x", None)
        return max(len(loader), 1) if loader is not None else 1

    def epoch_end_step(self) -> int:
        """The step of the current epoch's last iteration, where per-epoch scalars (val, gates) are written.

        One step axis for every tag (Dassl put per-epoch values at the epoch number, on the same axis as
        the iterations), so a resumed run's ``purge_step`` removes exactly the redone epochs' events.
        """
        return (self.epoch + 1) * self.steps_per_epoch() - 1

    def _restore_best_result(self, directory: str) -> None:
        """After a resume, keep comparing against the best val result saved before the interruption.

        Dassl restarted from -inf, so the first resumed epoch always overwrote model-best.
        """
        if self.cfg.TEST.FINAL_MODEL != "best_val":
            return
        best_path = os.path.join(directory, self.get_model_names()[0], _BEST_FILE)
        if os.path.exists(best_path):
            val_result = load_checkpoint(best_path).get("val_result")
            if val_result is not None:
                self.best_result = val_result

    def after_epoch(self) -> None:
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = freq > 0 and (self.epoch + 1) % freq == 0
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=_BEST_FILE)
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    def after_train(self) -> None:
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    @torch.no_grad()
    def test(self, split: str | None = None) -> float:
        """Evaluate on ``split`` (default ``TEST.SPLIT``; "val" falls back to test without a val set)."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in _progress(data_loader, f"eval {split}"):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch_end_step())
        return list(results.values())[0]

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        return self.model(input)

    def parse_batch_test(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def get_current_lr(self, names: str | list[str] | None = None) -> float:
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]


class TrainerX(SimpleTrainer):
    """Trains on labelled data only (``train_loader_x``): the base of every prompt-learning trainer."""

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ

        end = time.time()
        bar = _progress(self.train_loader_x, f"epoch {self.epoch + 1}/{self.max_epoch}")
        for self.batch_idx, batch in enumerate(bar):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            crash_point("train-step")
            self._note_finite_step(loss_summary)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            if (self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq:
                remaining = (self.num_batches - self.batch_idx - 1) + (
                    self.max_epoch - self.epoch - 1
                ) * self.num_batches
                eta = datetime.timedelta(seconds=int(batch_time.avg * remaining))
                info = [
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {self.get_current_lr():.4e}",
                    f"eta {eta}",
                ]
                print(" ".join(info))

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()
        self.write_scalar(EPOCH_TAG, self.epoch + 1, self.epoch_end_step())

    def parse_batch_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, domains) on the device, as Dassl's TrainerX (prompt trainers override it)."""
        return batch["img"].to(self.device), batch["label"].to(self.device), batch["domain"].to(self.device)


class TrainerXU(SimpleTrainer):
    """Trains on labelled and unlabelled data together (Dassl's base of its DA and SSL trainers).

    An epoch has ``TRAIN.COUNT_ITER`` batches: as many as the labelled loader (``train_x``), the
    unlabelled one (``train_u``) or the smaller of the two (``smaller_one``); a loader that runs out
    first restarts. ``forward_backward(batch_x, batch_u)`` gets one batch of each.
    """

    def run_epoch(self) -> None:
        if self.train_loader_u is None:
            raise ValueError(
                f"{type(self).__name__} is a TrainerXU and needs unlabelled data (train_loader_u), but the "
                f"dataset {self.cfg.DATASET.NAME} has no train_u split"
            )
        self.set_model_mode("train")
        losses = MetricMeter()
        sizes = {"train_x": len(self.train_loader_x), "train_u": len(self.train_loader_u)}
        count_iter = self.cfg.TRAIN.COUNT_ITER
        if count_iter == "smaller_one":
            self.num_batches = min(sizes.values())
        elif count_iter in sizes:
            self.num_batches = sizes[count_iter]
        else:
            raise ValueError(f'TRAIN.COUNT_ITER must be train_x, train_u or smaller_one, got "{count_iter}"')
        iter_x, iter_u = iter(self.train_loader_x), iter(self.train_loader_u)
        for batch_idx in range(self.num_batches):
            self.batch_idx = batch_idx
            try:
                batch_x = next(iter_x)
            except StopIteration:
                iter_x = iter(self.train_loader_x)
                batch_x = next(iter_x)
            try:
                batch_u = next(iter_u)
            except StopIteration:
                iter_u = iter(self.train_loader_u)
                batch_u = next(iter_u)
            loss_summary = self.forward_backward(batch_x, batch_u)
            self._note_finite_step(loss_summary)
            losses.update(loss_summary)
            if (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0 or self.num_batches < self.cfg.TRAIN.PRINT_FREQ:
                print(
                    f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{self.num_batches}] "
                    f"{losses} lr {self.get_current_lr():.4e}"
                )
            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)

    def parse_batch_train(
        self, batch_x: dict[str, Any], batch_u: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(labelled images, labels, unlabelled images) on the device, as Dassl's TrainerXU."""
        return batch_x["img"].to(self.device), batch_x["label"].to(self.device), batch_u["img"].to(self.device)
