"""Bring benchmark datasets to the layout the readers and CoOp's split files expect, in one command.

    python -m tools.prepare_data NAME... --root $DATA [--archive FILE]... [--trust-archive] [--mirror URL]

``NAME`` is a ``DATASET.NAME`` as ``tools.check_data`` takes it (any case), or ``all`` (the 11 base-to-new
datasets and the four ImageNet variants). For each dataset the tool

1. stops at once when ``tools.check_data`` already finds it ready (a re-run is a no-op and says so);
2. takes each file it needs from ``--archive`` (matched by file name), else from the source's URL (on the
   ``--mirror`` host when given), checking the checksum the source publishes; a file with no public URL
   (ImageNet, Stanford Cars, UCF101's frames) gets two lines saying what to fetch and how to pass it;
3. unpacks everything into a hidden folder inside ``--root``, moves the members into the reader's layout,
   installs CoOp's split file (shipped in ``datasets/splits/`` or fetched from a pinned commit), and only then
   renames the result into place, so an interrupted run leaves nothing ``check_data`` would pass;
4. ends with ``tools.check_data``'s verdict for every dataset it touched (exit status 1 unless all ready).

Nothing is written outside ``--root``: downloads go to ``--root/.downloads`` (kept while partial, so the next
run resumes; deleted once the dataset is in place), staging folders to ``--root/.prepare-*``. A split file
already in the dataset folder (your own) is kept. Sources and their status: docs/DATASETS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from urllib.parse import urlparse

from engine.data.datasets import DATASET_REGISTRY
from tools import data_sources
from tools.archives import (
    ArchiveError,
    ChecksumMismatch,
    download,
    ensure_free_space,
    extract,
    is_archive,
    verify,
)
from tools.check_data import MISMATCH, check_dataset, format_report
from tools.data_sources import SOURCES, DatasetSource, Source

__all__ = ["PrepareError", "main", "prepare", "resolve_names"]

DOWNLOADS = ".downloads"


class PrepareError(RuntimeError):
    """A dataset cannot be prepared; the message says what to do."""


def resolve_names(names: Sequence[str]) -> list[str]:
    """Registry names in preparation order (ImageNet before its variants, which copy its classnames.txt)."""
    by_lower = {name.lower(): name for name in SOURCES}
    chosen = set()
    for name in names:
        if name.lower() == "all":
            chosen.update(SOURCES)
        elif name.lower() in by_lower:
            chosen.add(by_lower[name.lower()])
        else:
            raise ValueError(f"Unknown dataset {name!r}; known: all, {', '.join(SOURCES)}")
    return [name for name in SOURCES if name in chosen]


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host replaced by ``mirror`` (which may carry a path prefix)."""
    if not mirror:
        return url
    parsed = urlparse(url)
    return mirror.rstrip("/") + parsed.path + (f"?{parsed.query}" if parsed.query else "")


class _Run:
    """One dataset's preparation: where its files come from, its staging folder, its downloads."""

    def __init__(self, ds: DatasetSource, root: str, archives: dict[str, str], trust: bool, mirror: str | None):
        self.ds, self.root, self.archives, self.trust, self.mirror = ds, root, archives, trust, mirror
        self.folder = DATASET_REGISTRY.get(ds.name).dataset_dir
        self.final = os.path.join(root, self.folder)
        self.downloaded: list[str] = []

    # -- where each file comes from

    def missing_files(self) -> list[Source]:
        """Sources with no --archive, no URL and no local copy to take them from."""
        return [s for s in self.ds.sources if self.origin(s) is None]

    def origin(self, source: Source) -> str | None:
        if source.filename in self.archives:
            return "archive"
        if source.copy_from and os.path.isfile(os.path.join(self.root, source.copy_from)):
            return "copy"
        return "url" if source.url else None

    def obtain(self, source: Source) -> str:
        """A verified local path for ``source``."""
        origin = self.origin(source)
        if origin == "archive":
            path = self.archives[source.filename]
            ensure_free_space(self.root, os.path.getsize(path), f"Unpacking {path}")
        elif origin == "copy":
            return os.path.join(self.root, source.copy_from)
        else:
            path = self.fetch(source)
        try:
            print(f"{self.ds.name}: {verify(path, data_sources.published_checksum(source), self.trust)}")
        except ChecksumMismatch:
            if origin == "url":  # a bad download is not kept for the next run to trip over
                os.remove(path)
            raise
        return path

    def fetch(self, source: Source) -> str:
        folder = os.path.join(self.root, DOWNLOADS)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, source.filename)
        url = mirrored(source.url, self.mirror)
        if not os.path.isfile(path):
            print(f"{self.ds.name}: downloading {url}")
            hint = f"download it yourself and pass it with --archive {source.filename}"
            download(url, path, hint, reserve=1.0 if is_archive(source.filename) else 0.0)
        self.downloaded.append(path)
        return path

    # -- moving files into the layout

    def place(self, source: Source, path: str, work: str, staging: str) -> None:
        """Put ``source``'s content (a plain file or an archive's members) under ``work``."""
        if not is_archive(source.filename):
            dest = os.path.join(work, source.places[0][1] or source.filename)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(path, dest)
            return
        unpacked = tempfile.mkdtemp(prefix="unpack-", dir=staging)
        print(f"{self.ds.name}: extracting {os.path.basename(path)}")
        extract(path, unpacked)
        if source.inner:
            inner = self.member(unpacked, source.inner, path)
            unpacked = tempfile.mkdtemp(prefix="unpack-", dir=staging)
            extract(inner, unpacked)
        for inside, dest in source.places:
            src = self.member(unpacked, inside, path)
            if dest:
                os.makedirs(os.path.dirname(os.path.join(work, dest)), exist_ok=True)
                os.replace(src, os.path.join(work, dest))
            else:
                for entry in os.listdir(src):
                    os.replace(os.path.join(src, entry), os.path.join(work, entry))

    def member(self, unpacked: str, inside: str, archive: str) -> str:
        path = os.path.join(unpacked, inside)
        if not os.path.exists(path):
            raise PrepareError(
                f"{archive} has no {inside or 'content'!r} at its top: it is not the archive "
                f"{self.ds.name} expects ({', '.join(s.filename for s in self.ds.sources)})"
            )
        return path

    def install_split(self, work: str) -> None:
        """CoOp's split file into ``work``: a user's own file in the dataset folder is left alone."""
        split = self.ds.split
        if split is None:
            return
        if os.path.isfile(os.path.join(self.final, split.filename)):
            print(f"{self.ds.name}: keeping the split file already in {self.final}")
            return
        dest = os.path.join(work, split.filename)
        if split.filename not in self.archives and data_sources.shipped_split(split.filename, dest):
            print(f"{self.ds.name}: installed the shipped {split.filename} (sha256 verified)")
            return
        shutil.copyfile(self.obtain(split), dest)

    def commit(self, work: str) -> None:
        """Move ``work`` into place: whole when the folder is new, else entry by entry, split file last."""
        if not os.path.exists(self.final):
            os.rename(work, self.final)
            return
        split_name = self.ds.split.filename if self.ds.split else None
        for entry in sorted(os.listdir(work), key=lambda e: e == split_name):
            target = os.path.join(self.final, entry)
            if os.path.exists(target):
                print(f"{self.ds.name}: keeping the existing {target} (move it away to have it replaced)")
            else:
                os.rename(os.path.join(work, entry), target)

    def run(self) -> None:
        missing = self.missing_files()
        if missing:
            names = ", ".join(s.filename for s in missing)
            lines = self.ds.guidance or (
                f"{self.ds.name} needs {names}, which has no public download.",
                f"Fetch it and pass it with --archive {missing[0].filename}.",
            )
            raise PrepareError("\n".join(lines))
        for stale in os.listdir(self.root):  # what an interrupted run of this dataset left behind
            if stale.startswith(f".prepare-{self.folder}-"):
                shutil.rmtree(os.path.join(self.root, stale))
        staging = tempfile.mkdtemp(prefix=f".prepare-{self.folder}-", dir=self.root)
        try:
            work = os.path.join(staging, self.folder)
            os.makedirs(work)
            paths = [(s, self.obtain(s)) for s in self.ds.sources]
            if self.ds.handler == "imagenet":
                imagenet_layout(dict((s.filename, p) for s, p in paths), work, staging)
            else:
                for source, path in paths:
                    self.place(source, path, work, staging)
            self.install_split(work)
            self.commit(work)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for path in self.downloaded:
            os.remove(path)
        downloads = os.path.join(self.root, DOWNLOADS)
        if os.path.isdir(downloads) and not os.listdir(downloads):
            os.rmdir(downloads)


def _val_wnids(devkit_root: str) -> list[str]:
    """The wnid of every val image, in file-name order, from the devkit's meta.mat and ground truth."""
    from scipy.io import loadmat

    synsets = loadmat(os.path.join(devkit_root, "data", "meta.mat"), squeeze_me=True)["synsets"]
    leaf = {
        int(i): str(w)
        for i, w, n in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"])
        if int(n) == 0
    }
    with open(os.path.join(devkit_root, "data", "ILSVRC2012_validation_ground_truth.txt")) as f:
        return [leaf[int(line)] for line in f if line.strip()]


def imagenet_layout(files: dict[str, str], work: str, staging: str) -> None:
    """ILSVRC2012's train tar of per-wnid tars and flat val tar -> ``images/{train,val}/<wnid>/``."""
    train_dir = os.path.join(work, "images", "train")
    os.makedirs(train_dir)
    print("ImageNet: extracting the train archive and its per-class archives")
    extract(files["ILSVRC2012_img_train.tar"], train_dir)
    for inner in sorted(os.listdir(train_dir)):
        if inner.endswith(".tar"):
            extract(os.path.join(train_dir, inner), os.path.join(train_dir, inner[: -len(".tar")]))
            os.remove(os.path.join(train_dir, inner))
    devkit = tempfile.mkdtemp(prefix="devkit-", dir=staging)
    extract(files["ILSVRC2012_devkit_t12.tar.gz"], devkit)
    wnids = _val_wnids(os.path.join(devkit, "ILSVRC2012_devkit_t12"))
    val_dir = os.path.join(work, "images", "val")
    os.makedirs(val_dir)
    print("ImageNet: extracting the val archive and sorting it into wnid folders (devkit ground truth)")
    extract(files["ILSVRC2012_img_val.tar"], val_dir)
    images = sorted(f for f in os.listdir(val_dir) if os.path.isfile(os.path.join(val_dir, f)))
    if len(images) != len(wnids):
        raise PrepareError(f"ILSVRC2012_img_val.tar holds {len(images)} images, the devkit labels {len(wnids)}")
    for wnid, image in zip(wnids, images):
        os.makedirs(os.path.join(val_dir, wnid), exist_ok=True)
        os.replace(os.path.join(val_dir, image), os.path.join(val_dir, wnid, image))
    shutil.copyfile(files["classnames.txt"], os.path.join(work, "classnames.txt"))


def _archives_by_name(paths: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """``--archive`` files keyed by file name; each must exist and be one the chosen datasets need."""
    wanted = {s.filename for n in names for s in (*SOURCES[n].sources, SOURCES[n].split) if s}
    out = {}
    for path in paths:
        path = os.path.abspath(os.path.expanduser(path))
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise ValueError(f"--archive {path}: no such file")
        if name not in wanted:
            raise ValueError(
                f"--archive {path}: {name} is not a file of {', '.join(names)}; expected one of {sorted(wanted)}"
            )
        out[name] = path
    return out


def prepare(
    names: Sequence[str],
    root: str,
    archives: Sequence[str] = (),
    trust: bool = False,
    mirror: str | None = None,
) -> bool:
    """Prepare ``names`` under ``root``, print check_data's verdict; True when every one is ready."""
    chosen = resolve_names(names)
    root = os.path.abspath(os.path.expanduser(root))
    os.makedirs(root, exist_ok=True)
    by_name = _archives_by_name(archives, chosen)
    for name in chosen:
        before = check_dataset(name, root)
        if before.ok:
            print(f"{name}: already ready under {root}; nothing to do")
            continue
        if before.status == MISMATCH:  # every file is there; the split is someone's own
            print(f"{name}: every file is there but the split differs from the published one; left as it is")
            continue
        try:
            _Run(SOURCES[name], root, by_name, trust, mirror).run()
        except (ArchiveError, PrepareError) as e:
            print(f"{name}: {e}")
    reports = [check_dataset(name, root) for name in chosen]
    print(f"Dataset root: {root}")
    print(format_report(reports))
    return all(r.ok for r in reports)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME", help="DATASET.NAME values (any case) or 'all'")
    parser.add_argument("--root", required=True, help="the folder holding every dataset (DATASET.ROOT)")
    parser.add_argument(
        "--archive", action="append", default=[], metavar="FILE",
        help="a file you already have (matched by name, e.g. ILSVRC2012_img_val.tar); repeatable",
    )  # fmt: skip
    parser.add_argument("--trust-archive", action="store_true", help="use files whose checksum differs (warns)")
    parser.add_argument("--mirror", help="fetch from this host instead (scheme://host[:port][/prefix])")
    args = parser.parse_args(argv)
    try:
        ok = prepare(args.names, args.root, args.archive, args.trust_archive, args.mirror)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
