"""``DataManager``, ``DatasetWrapper`` and ``build_data_loader`` with Dassl's semantics.

Training loaders drop the last incomplete batch only when the split holds at least one full batch;
worker processes get numpy seeded from torch's per-worker seed, so runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
from tabulate import tabulate
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from engine.utils import check_image_headers, read_image

from .datasets import Datum, build_dataset
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform

__all__ = ["DataManager", "DatasetWrapper", "build_data_loader", "seed_worker"]


def seed_worker(worker_id: int) -> None:
    """Seed numpy in a DataLoader worker from torch's per-worker seed (torch already seeds ``random``)."""
    np.random.seed(torch.initial_seed() % 2**32)


class DatasetWrapper(TorchDataset):
    """Turns a list of ``Datum`` into dicts of ``img``/``label``/``domain``/``impath``/``index``.

    A list of transforms yields ``img``, ``img2``, ...; ``DATALOADER.K_TRANSFORMS > 1`` (training only)
    makes each of them a list of k augmented views; ``RETURN_IMG0`` adds an un-augmented ``img0``.
    """

    def __init__(self, cfg: Any, data_source: Sequence[Datum], transform: Any = None, is_train: bool = False) -> None:
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(
                f"DATALOADER.K_TRANSFORMS={self.k_tfm} asks for several augmented views, but no transform is given"
            )
        to_tensor: list[Any] = [
            T.Resize(tuple(cfg.INPUT.SIZE), interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]),
            T.ToTensor(),
        ]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(to_tensor)

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.data_source[idx]
        output: dict[str, Any] = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm: Callable[[Any], Any], img0: Any) -> Any:
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views


def build_data_loader(
    cfg: Any,
    sampler_type: str = "SequentialSampler",
    data_source: Sequence[Datum] | None = None,
    batch_size: int = 64,
    n_domain: int = 0,
    n_ins: int = 2,
    tfm: Any = None,
    is_train: bool = True,
    dataset_wrapper: type[TorchDataset] | None = None,
) -> DataLoader:
    """A DataLoader over ``data_source`` wrapped by ``dataset_wrapper`` (default ``DatasetWrapper``)."""
    if not data_source:
        raise ValueError("build_data_loader: the data source is empty (check the dataset split)")
    sampler = build_sampler(
        sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size, n_domain=n_domain, n_ins=n_ins
    )
    wrapper_cls = dataset_wrapper if dataset_wrapper is not None else DatasetWrapper
    loader = DataLoader(
        wrapper_cls(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
        worker_init_fn=seed_worker,
    )
    if len(loader) == 0:
        raise ValueError(f"build_data_loader: no batch from {len(data_source)} items with batch size {batch_size}")
    return loader


class DataManager:
    """Builds the dataset of ``cfg.DATASET.NAME``, its transforms and its train/val/test loaders."""

    def __init__(
        self,
        cfg: Any,
        custom_tfm_train: Any = None,
        custom_tfm_test: Any = None,
        dataset_wrapper: type[TorchDataset] | None = None,
    ) -> None:
        dataset = build_dataset(cfg)
        if not dataset.train_x:
            source = getattr(dataset, "split_path", "") or f"the data under DATASET.ROOT {cfg.DATASET.ROOT}"
            raise ValueError(f"{cfg.DATASET.NAME}: the train split is empty; check {source}")
        dl = cfg.DATALOADER
        for key in ("TRAIN_X", "TRAIN_U", "TEST"):
            if dl[key].BATCH_SIZE < 1:
                raise ValueError(f"DATALOADER.{key}.BATCH_SIZE must be >= 1, got {dl[key].BATCH_SIZE}")
        if cfg.DATASET.get("CHECK_IMAGES", True):  # every split's images, each once (ImageNet's val is its test)
            checked: set[str] = set()
            for split in ("train_x", "train_u", "val", "test"):
                paths = sorted({item.impath for item in getattr(dataset, split) or []} - checked)
                check_image_headers(paths, f"the {split} split of {cfg.DATASET.NAME}")
                checked.update(paths)
        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        self.train_loader_x = build_data_loader(
            cfg,
            sampler_type=dl.TRAIN_X.SAMPLER,
            data_source=dataset.train_x,
            batch_size=dl.TRAIN_X.BATCH_SIZE,
            n_domain=dl.TRAIN_X.N_DOMAIN,
            n_ins=dl.TRAIN_X.N_INS,
            tfm=tfm_train,
            is_train=True,
            dataset_wrapper=dataset_wrapper,
        )
        self.train_loader_u = None
        if dataset.train_u:
            u = dl.TRAIN_X if dl.TRAIN_U.SAME_AS_X else dl.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg,
                sampler_type=u.SAMPLER,
                data_source=dataset.train_u,
                batch_size=u.BATCH_SIZE,
                n_domain=u.N_DOMAIN,
                n_ins=u.N_INS,
                tfm=tfm_train,
                is_train=True,
                dataset_wrapper=dataset_wrapper,
            )
        self.val_loader = None
        if dataset.val:
            self.val_loader = self._test_loader(cfg, dataset.val, tfm_test, dataset_wrapper)
        self.test_loader = self._test_loader(cfg, dataset.test, tfm_test, dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        self.tfm_train = tfm_train
        self.tfm_test = tfm_test
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @staticmethod
    def _test_loader(cfg: Any, data: Sequence[Datum], tfm: Any, wrapper: type[TorchDataset] | None) -> DataLoader:
        return build_data_loader(
            cfg,
            sampler_type=cfg.DATALOADER.TEST.SAMPLER,
            data_source=data,
            batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
            tfm=tfm,
            is_train=False,
            dataset_wrapper=wrapper,
        )

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> dict[int, str]:
        return self._lab2cname

    def show_dataset_summary(self, cfg: Any) -> None:
        table: list[list[str]] = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", str(list(cfg.DATASET.SOURCE_DOMAINS))])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", str(list(cfg.DATASET.TARGET_DOMAINS))])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))
