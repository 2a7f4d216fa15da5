"""The ``Classification`` evaluator: accuracy, error, macro-F1, per-class results and confusion matrix.

Printed lines follow Dassl >= 0.6.2 exactly (``* accuracy: 81.2%`` ...), since result parsers read them.
"""

from __future__ import annotations

import os
from collections import OrderedDict, defaultdict
from typing import Any

import numpy as np
import torch

from engine.utils import Registry

__all__ = ["EVALUATOR_REGISTRY", "EvaluatorBase", "Classification", "macro_f1_score", "confusion_matrix"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the labels present in ``y_true`` (sklearn ``average="macro", labels=unique(y_true)``).

    A prediction of a label absent from ``y_true`` adds no F1 term of its own but is still a false
    negative of the true label, exactly as in sklearn. Plain numpy keeps sklearn off the import path.
    """
    scores = []
    for label in np.unique(y_true):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix over the sorted union of true and predicted labels."""
    labels = np.union1d(y_true, y_pred)
    index = {label: i for i, label in enumerate(labels)}
    cmat = np.zeros((len(labels), len(labels)), dtype=np.float64)
    for t, p in zip(y_true, y_pred):
        cmat[index[t], index[p]] += 1
    rows = cmat.sum(axis=1, keepdims=True)
    return np.divide(cmat, rows, out=np.zeros_like(cmat), where=rows > 0)


class EvaluatorBase:
    """Interface: ``reset``, ``process(model_output, ground_truth)``, ``evaluate() -> OrderedDict``."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluate(self) -> OrderedDict:
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accumulates argmax predictions; ``evaluate`` returns accuracy first (what ``test()`` returns)."""

    def __init__(self, cfg: Any, lab2cname: dict[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res: dict[int, list[bool]] | None = None
        if cfg.TEST.PER_CLASS_RESULT and lab2cname is None:
            raise ValueError("TEST.PER_CLASS_RESULT needs the label -> class name map (lab2cname)")
        self.reset()

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._y_true: list[int] = []
        self._y_pred: list[int] = []
        self._per_class_res = defaultdict(list) if self.cfg.TEST.PER_CLASS_RESULT else None

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        pred = mo.max(1)[1]
        matches = pred.eq(gt).int()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.detach().cpu().tolist())
        self._y_pred.extend(pred.detach().cpu().tolist())
        if self._per_class_res is not None:
            for label, hit in zip(gt.detach().cpu().tolist(), matches.cpu().tolist()):
                self._per_class_res[label].append(bool(hit))

    def evaluate(self) -> OrderedDict:
        if self._total == 0:
            raise ValueError("Classification.evaluate: no sample was processed")
        results: OrderedDict[str, float] = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        y_true, y_pred = np.asarray(self._y_true), np.asarray(self._y_pred)
        macro_f1 = 100.0 * macro_f1_score(y_true, y_pred)
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )

        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                hits = self._per_class_res[label]
                correct, total = sum(hits), len(hits)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                classname = self._lab2cname.get(label, "") if self._lab2cname else ""
                print(
                    f"* class: {label} ({classname})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = float(np.mean(accs))
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc

        if self.cfg.TEST.COMPUTE_CMAT:
            cmat = torch.from_numpy(confusion_matrix(y_true, y_pred))
            save_path = os.path.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            torch.save(cmat, save_path)
            print(f'Confusion matrix is saved to "{save_path}"')
        return results
