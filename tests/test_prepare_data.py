"""tools.prepare_data end to end against a loopback HTTP server that serves every source's tiny stand-in.

Nothing here reaches past 127.0.0.1: ``--mirror`` points every URL at a server the tests start, and the sources
without a public URL (ImageNet, Stanford Cars, UCF101's frames) are passed with ``--archive``. The fake archives
cannot carry the published checksums, so the tests replace ``data_sources.published_checksum`` with the
checksums of their own files (same kind as the registry's), and ``datasets/splits`` with tiny shipped splits.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import threading
import zipfile
from contextlib import contextmanager, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
from prepare_fakes import FAKES, Fake, split_bytes, tar, zip_
from test_datasets import make_cfg

import datasets  # noqa: F401  (registers the readers)
from engine.config import get_cfg_default
from engine.data.datasets import DATASET_REGISTRY
from tools import archives, data_sources, prepare_data
from tools.archives import checksum_of
from tools.check_data import check_dataset
from tools.data_sources import SOURCES

ROOT = Path(__file__).resolve().parents[1]
MANUAL = {"ImageNet", "StanfordCars", "UCF101"}  # no public URL: passed with --archive
VARIANTS = {"ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"}


def _dataset_configs() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "configs" / "datasets").glob("*.yaml")):
        cfg = get_cfg_default()
        cfg.merge_from_file(str(path))
        out[cfg.DATASET.NAME] = path
    return out


CONFIGS = _dataset_configs()


class _Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-``; ``server.cut[path] = n`` drops the connection after n body bytes once."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlparse(self.path).path
        rng = self.headers.get("Range")
        self.server.requests.append((path, rng))
        if self.server.no_range:
            rng = None
        data = self.server.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        if start >= len(data):
            self.send_error(416, "Range Not Satisfiable")
            return
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut.pop(path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(files: dict[str, bytes]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.cut, server.requests, server.no_range = files, {}, [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class World:
    """Every dataset's fake files, where the server serves them, and the checksums the tests 'publish'."""

    def __init__(self, tmp: Path) -> None:
        self.fakes: dict[str, Fake] = {name: build() for name, build in FAKES.items()}
        self.served: dict[str, bytes] = {}
        self.checksums: dict[str, str | None] = {}
        self.archive_dir = tmp / "archives"
        self.splits_dir = tmp / "shipped_splits"
        self.archive_dir.mkdir()
        self.splits_dir.mkdir()
        shipped = set(data_sources.shipped_split_checksums())
        sums = []
        for name, fake in self.fakes.items():
            ds = SOURCES[name]
            for source in ds.sources:
                data = fake.files[source.filename]
                self._publish(source, data)
                if source.url:
                    self.served[urlparse(source.url).path] = data
                else:
                    (self.archive_dir / source.filename).write_bytes(data)
            if ds.split is not None:
                data = split_bytes(fake.split)
                self._publish(ds.split, data)
                if ds.split.filename in shipped:
                    (self.splits_dir / (ds.split.filename + ".gz")).write_bytes(gzip.compress(data, mtime=0))
                    sums.append(f"{hashlib.sha256(data).hexdigest()}  {ds.split.filename}\n")
                else:
                    self.served[urlparse(ds.split.url).path] = data
        (self.splits_dir / "SHA256SUMS").write_text("".join(sums))

    def _publish(self, source, data: bytes) -> None:
        """Record the checksum of the fake file in the kind the registry uses for the real one."""
        if source.checksum is None:
            self.checksums[source.filename] = None
            return
        kind = source.checksum.partition(":")[0]
        path = self.archive_dir / ".tmp"
        path.write_bytes(data)
        self.checksums[source.filename] = f"{kind}:{checksum_of(str(path), kind)}"
        path.unlink()

    def patch(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(data_sources, "published_checksum", lambda source: self.checksums[source.filename])
        mp.setattr(data_sources, "SPLITS_DIR", str(self.splits_dir))
        for name, fake in self.fakes.items():
            mp.setattr(DATASET_REGISTRY.get(name), "expected", fake.expected)

    def archives(self, names) -> list[str]:
        return [str(self.archive_dir / s.filename) for n in names for s in SOURCES[n].sources if not s.url]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("world"))
    with pytest.MonkeyPatch.context() as mp:
        world.patch(mp)
        yield world


@pytest.fixture(scope="module")
def prepared(world, tmp_path_factory):
    """`prepare_data all` once: the alive sources over HTTP, the others with --archive (not classnames.txt,
    which the variants must copy from the prepared ImageNet)."""
    root = tmp_path_factory.mktemp("data")
    archives = world.archives(sorted(MANUAL))
    with serve(dict(world.served)) as (server, url):
        out = io.StringIO()
        with redirect_stdout(out):
            ok = prepare_data.prepare(["all"], str(root), archives, mirror=url)
        requests = list(server.requests)
    return root, ok, out.getvalue(), requests


def run(capsys, *argv: str) -> tuple[int, str]:
    code = prepare_data.main(list(argv))
    return code, capsys.readouterr().out


# --------------------------------------------------------------------------------- all 15, end to end


def test_all_fifteen_prepared_and_ready(prepared):
    root, ok, out, requests = prepared
    assert ok, out
    assert out.count("ready     ") == 15 and "15 of 15 dataset(s) ready" in out
    for ds in SOURCES.values():  # every published file with a URL was fetched from the mirror, nothing else
        for source in ds.sources:
            assert (source.url is not None) == any(p == urlparse(source.url or "").path for p, _ in requests)
    assert "installed the shipped split_zhou_EuroSAT.json (sha256 verified)" in out
    assert "verified split_zhou_Food101.json (gitblob" in out  # fetched from the pinned commit
    assert not [p for p in os.listdir(root) if p.startswith(".prepare-")]
    assert not (root / ".downloads").exists()  # downloads deleted once their dataset is in place
    assert (root / "imagenet-adversarial" / "classnames.txt").read_bytes() == (
        root / "imagenet" / "classnames.txt"
    ).read_bytes()


@pytest.mark.parametrize("name", sorted(FAKES))
def test_prepared_dataset_loads_base_new_all(prepared, world, name):
    root = prepared[0]
    assert check_dataset(name, str(root)).ok
    fake = world.fakes[name]
    modes = ("all",) if name in VARIANTS else ("all", "base", "new")
    for mode in modes:
        ds = DATASET_REGISTRY.get(name)(make_cfg(name, root, subsample=mode, shots=1))
        assert ds.num_classes == {"all": fake.expected.classes, "base": 2, "new": 2}[mode]
        assert all(os.path.isfile(item.impath) for item in ds.test)


def test_imagenet_val_sorted_by_the_devkit_ground_truth(prepared):
    val = prepared[0] / "imagenet" / "images" / "val"
    # ground truth 4,3,2,1,1,2,3,4 and ID 4 = n01440764 (the meta.mat lists the wnids in reverse)
    assert sorted(os.listdir(val / "n01440764")) == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000008.JPEG"]
    assert sorted(os.listdir(val / "n01491361")) == ["ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000005.JPEG"]
    train = prepared[0] / "imagenet" / "images" / "train"
    assert sorted(os.listdir(train)) == ["n01440764", "n01443537", "n01484850", "n01491361"]  # inner tars gone
    assert sorted(os.listdir(train / "n01440764")) == [f"n01440764_{k}.JPEG" for k in range(1, 4)]


def test_rerun_is_a_noop_that_says_so(prepared, world, capsys):
    root = prepared[0]
    with serve(dict(world.served)) as (server, url):
        code, out = run(capsys, "all", "--root", str(root), "--mirror", url)
        assert server.requests == []
    assert code == 0
    assert out.count("already ready under") == 15


# ------------------------------------------------------------------------------------------ one BMIP step


@pytest.mark.parametrize("name", sorted(FAKES))
def test_one_bmip_step_on_each_prepared_dataset(prepared, name, tmp_path, monkeypatch):
    import train

    monkeypatch.setattr(train, "collect_env_info", lambda: "(skipped in tests)")
    config = CONFIGS[name]
    train.main([
        "--root", str(prepared[0]), "--seed", "1", "--trainer", "BMIP",
        "--dataset-config-file", str(config),
        "--config-file", str(ROOT / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"),
        "--output-dir", str(tmp_path / "out"),
        "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "DATALOADER.TEST.BATCH_SIZE", "16",
        "TEST.NO_TEST", "True",
        "DATASET.SUBSAMPLE_CLASSES", "all" if name in VARIANTS else "base",
    ])  # fmt: skip
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Finish training" in log


# --------------------------------------------------------------------------------- failures and safety


@pytest.fixture
def dtd(world, tmp_path):
    """A fresh root and DTD's served files (DTD: one archive plus a shipped split)."""
    files = dict(world.served)
    return tmp_path / "data", files, "/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"


def test_interrupted_download_resumes_with_a_range_request(dtd, capsys):
    root, files, path = dtd
    with serve(files) as (server, url):
        half = len(files[path]) // 2
        server.cut[path] = half
        code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)
        assert code == 1 and f"stopped at byte {half:,}" in out and "run again to resume" in out
        assert (root / ".downloads" / "dtd-r1.0.1.tar.gz.part").stat().st_size == half
        assert check_dataset("DescribableTextures", str(root)).status == "missing"
        code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)
        assert code == 0, out
        assert (path, f"bytes={half}-") in server.requests and f"resuming dtd-r1.0.1.tar.gz at byte {half:,}" in out


def test_a_server_without_range_support_restarts_the_download(dtd, capsys):
    root, files, path = dtd
    with serve(files) as (server, url):
        server.cut[path] = len(files[path]) // 2
        assert run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)[0] == 1
        server.no_range = True
        code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)
    assert code == 0, out
    assert "resuming" not in out and check_dataset("DescribableTextures", str(root)).ok


def test_too_little_free_disk_stops_before_the_first_byte(dtd, capsys, monkeypatch):
    root, files, path = dtd
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9, free=100))
    with serve(files) as (_, url):
        code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)
    line = next(x for x in out.splitlines() if "are free" in x)
    assert code == 1 and f"Downloading {url}{path} needs" in line
    assert not (root / ".downloads" / "dtd-r1.0.1.tar.gz.part").exists()


def test_checksum_mismatch_is_refused_and_trust_archive_passes_with_one_warning(world, tmp_path, capsys):
    bad = tmp_path / "dtd-r1.0.1.tar.gz"
    bad.write_bytes(tar({"dtd/images/banded/banded_0001.jpg": b"other bytes"}))
    root = tmp_path / "data"
    code, out = run(capsys, "DescribableTextures", "--root", str(root), "--archive", str(bad))
    md5 = checksum_of(str(bad), "md5")
    published = world.checksums["dtd-r1.0.1.tar.gz"].partition(":")[2]
    line = next(x for x in out.splitlines() if "refusing" in x)
    assert md5 in line and published in line and "--trust-archive" in line
    assert code == 1 and not (root / "dtd").exists()

    good = tmp_path / "trusted" / "dtd-r1.0.1.tar.gz"
    good.parent.mkdir()
    good.write_bytes(world.fakes["DescribableTextures"].files["dtd-r1.0.1.tar.gz"])
    with open(good, "ab") as f:  # same content, other bytes: a re-packed archive
        f.write(b"\0" * 1024)
    code, out = run(capsys, "DescribableTextures", "--root", str(root), "--archive", str(good), "--trust-archive")
    warnings = [x for x in out.splitlines() if x.startswith("DescribableTextures: warning:")]
    assert code == 0, out
    assert len(warnings) == 1 and published in warnings[0] and "--trust-archive" in warnings[0]


def test_404_and_refused_connection_name_the_url_and_the_archive_way(dtd, capsys):
    root, files, path = dtd
    del files[path]
    with serve(files) as (_, url):
        code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)
    lines = [x for x in out.splitlines() if x.startswith("DescribableTextures: cannot download")]
    assert code == 1 and len(lines) == 1
    assert f"{url}{path}: HTTP 404" in lines[0] and "--archive dtd-r1.0.1.tar.gz" in lines[0]

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", f"http://127.0.0.1:{port}")
    lines = [x for x in out.splitlines() if x.startswith("DescribableTextures: cannot download")]
    assert code == 1 and len(lines) == 1
    assert f"http://127.0.0.1:{port}{path}" in lines[0] and "refused" in lines[0].lower()
    assert "--archive dtd-r1.0.1.tar.gz" in lines[0]


def _link_tar(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tf.addfile(info)
    return buffer.getvalue()


def _zip_link(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, target)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "filename, data, why",
    [
        ("dtd-r1.0.1.tar.gz", tar({"dtd/images/../../../escaped.txt": b"x"}), "'..' component"),
        ("dtd-r1.0.1.tar.gz", tar({"/tmp/escaped_absolute.txt": b"x"}), "absolute path"),
        ("dtd-r1.0.1.tar.gz", _link_tar("dtd/images/link", "../../../../etc"), "outside the destination"),
        ("dtd-r1.0.1.tar.gz", _link_tar("dtd/images/hard", "../../etc/passwd", tarfile.LNKTYPE), "outside the destination"),
        ("EuroSAT.zip", zip_({"2750/../../escaped.txt": b"x"}), "'..' component"),
        ("EuroSAT.zip", zip_({"/tmp/escaped_absolute.txt": b"x"}), "absolute path"),
        ("EuroSAT.zip", _zip_link("2750/link", "/etc/passwd"), "outside the destination"),
    ],
    ids=["tar-dotdot", "tar-absolute", "tar-symlink-out", "tar-hardlink-out", "zip-dotdot", "zip-absolute",
         "zip-symlink-out"],
)
def test_traversal_archives_are_refused_and_nothing_is_left(world, tmp_path, capsys, filename, data, why):
    archive = tmp_path / "in" / filename
    archive.parent.mkdir()
    archive.write_bytes(data)
    root = tmp_path / "data"
    name = "EuroSAT" if filename.endswith(".zip") else "DescribableTextures"
    code, out = run(capsys, name, "--root", str(root), "--archive", str(archive), "--trust-archive")
    refusal = [x for x in out.splitlines() if "refusing to extract" in x]
    assert code == 1 and len(refusal) == 1 and why in refusal[0]
    assert sorted(os.listdir(tmp_path)) == ["data", "in"] and os.listdir(root) == []
    assert not os.path.exists("/tmp/escaped_absolute.txt")


def test_interrupted_extraction_leaves_nothing_check_data_passes(world, tmp_path, monkeypatch, capsys):
    archive = world.archive_dir.parent / "dtd-r1.0.1.tar.gz"
    archive.write_bytes(world.fakes["DescribableTextures"].files["dtd-r1.0.1.tar.gz"])
    root = tmp_path / "data"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_data._Run, "install_split", killed)  # images moved, then the process stops
    with pytest.raises(KeyboardInterrupt):
        prepare_data.main(["DescribableTextures", "--root", str(root), "--archive", str(archive)])
    assert check_dataset("DescribableTextures", str(root)).status == "missing"
    monkeypatch.undo()
    (root / ".prepare-dtd-left-by-a-killed-run").mkdir()  # a hard kill leaves its hidden staging folder
    code, out = run(capsys, "DescribableTextures", "--root", str(root), "--archive", str(archive))
    assert code == 0, out
    assert sorted(os.listdir(root)) == ["dtd"]


def test_dead_and_login_sources_say_in_two_lines_what_to_fetch(world, tmp_path, capsys):
    for name in ("StanfordCars", "ImageNet", "UCF101"):
        code, out = run(capsys, name, "--root", str(tmp_path))
        lines = [x for x in out.splitlines() if not x.startswith(("missing", "    ", "Dataset root", "0 of"))]
        assert code == 1 and len(lines) == 2, out
        assert lines[0].startswith(f"{name}: ") and "--archive" in lines[1]


def test_users_own_split_file_is_kept(world, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "dtd").mkdir(parents=True)
    own = split_bytes(world.fakes["DescribableTextures"].split).replace(b"    ", b"  ")
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_bytes(own)
    archive = world.archive_dir.parent / "dtd-r1.0.1.tar.gz"
    archive.write_bytes(world.fakes["DescribableTextures"].files["dtd-r1.0.1.tar.gz"])
    code, out = run(capsys, "DescribableTextures", "--root", str(root), "--archive", str(archive))
    assert code == 0, out
    assert "keeping the split file already in" in out
    assert (root / "dtd" / "split_zhou_DescribableTextures.json").read_bytes() == own


def test_docs_list_every_source_with_its_status():
    text = (ROOT / "docs" / "DATASETS.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (alive|dead|login|drive) \|", text, re.M))
    assert rows == {name: ds.status for name, ds in SOURCES.items()}


def test_a_complete_folder_with_another_split_is_left_alone(prepared, world, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(prepared[0] / "dtd", root / "dtd")
    split = dict(world.fakes["DescribableTextures"].split)
    split["train"] = split["train"][:-1]  # a user's own split: other counts than the published one
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    with serve({}) as (server, url):
        code, out = run(capsys, "DescribableTextures", "--root", str(root), "--mirror", url)
        assert server.requests == []
    assert code == 1 and "split differs from the published one; left as it is" in out and "mismatch" in out


def test_bad_names_and_archives_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare_data.main(["Cifar10", "--root", str(tmp_path)])
    assert "Unknown dataset 'Cifar10'" in capsys.readouterr().err
    stray = tmp_path / "mystery.tar"
    stray.write_bytes(b"")
    with pytest.raises(SystemExit):
        prepare_data.main(["DescribableTextures", "--root", str(tmp_path), "--archive", str(stray)])
    assert "mystery.tar is not a file of DescribableTextures" in capsys.readouterr().err
