"""Fetch, verify and unpack dataset archives safely: the file-handling half of ``tools.prepare_data``.

* :func:`download` resumes a partial download with an HTTP Range request. torchvision's ``download_url``
  cannot (it restarts from byte 0 and writes straight to the final name), and an interrupted 150 GB ImageNet
  or 37 GB SUN397 transfer must not start over, so this is the one part written by hand: a ``.part`` file
  that grows, a tqdm bar, a free-disk check before the first byte, and an atomic ``os.replace`` at the end.
* :func:`verify` compares a file with the checksum its source publishes (md5 through torchvision's
  ``calculate_md5``, sha256, or the git blob id of a file committed on GitHub).
* :func:`extract` unpacks tar and zip archives, refusing members with absolute paths, ``..`` components or
  links that point outside the destination (tarfile's ``data`` filter is applied on top).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import PurePosixPath

from torchvision.datasets.utils import calculate_md5
from tqdm import tqdm

__all__ = [
    "ArchiveError",
    "ChecksumMismatch",
    "DownloadError",
    "UnsafeArchiveError",
    "checksum_of",
    "download",
    "ensure_free_space",
    "extract",
    "is_archive",
    "verify",
]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
_CHUNK = 1 << 20
_USER_AGENT = "bmip-toolkit prepare_data"


class ArchiveError(RuntimeError):
    """A source could not be fetched, verified or unpacked; the message is one line for the user."""


class DownloadError(ArchiveError):
    pass


class ChecksumMismatch(ArchiveError):
    pass


class UnsafeArchiveError(ArchiveError):
    pass


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


# ------------------------------------------------------------------------------------------------ checksums


def _hash_file(path: str, digest: hashlib._Hash) -> str:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_of(path: str, kind: str) -> str:
    """``kind`` is ``md5``, ``sha256`` or ``gitblob`` (the sha1 git records for a committed file)."""
    if kind == "md5":
        return calculate_md5(path)
    if kind == "sha256":
        return _hash_file(path, hashlib.sha256())
    if kind == "gitblob":
        digest = hashlib.sha1()
        digest.update(f"blob {os.path.getsize(path)}\0".encode())
        return _hash_file(path, digest)
    raise ValueError(f"Unknown checksum kind {kind!r} (expected md5, sha256 or gitblob)")


def verify(path: str, expected: str | None, trust: bool) -> str:
    """Check ``path`` against ``expected`` (``"<kind>:<hex>"``); return a line to print, or raise.

    A mismatch raises :class:`ChecksumMismatch` naming both checksums, unless ``trust`` (``--trust-archive``),
    which turns it into one warning line. Without a published checksum the file's sha256 is reported.
    """
    if expected is None:
        return f"note: {path}: its source publishes no checksum; sha256 {checksum_of(path, 'sha256')}"
    kind, _, want = expected.partition(":")
    got = checksum_of(path, kind)
    if got == want.lower():
        return f"verified {os.path.basename(path)} ({kind} {got})"
    message = f"{path}: {kind} is {got}, but the published {kind} is {want}"
    if trust:
        return f"warning: {message}; used anyway (--trust-archive)"
    raise ChecksumMismatch(
        f"{message}: refusing it (a damaged or different file; pass --trust-archive to use it anyway)"
    )


# ------------------------------------------------------------------------------------------------- download


def ensure_free_space(folder: str, needed: int, what: str) -> None:
    """Refuse to start when ``folder``'s disk has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ArchiveError(
            f"{what} needs {needed / 1e9:.2f} GB under {folder}, but only {free / 1e9:.2f} GB are free"
        )


def download(url: str, dest: str, archive_hint: str, reserve: float = 1.0) -> None:
    """Fetch ``url`` to ``dest``, resuming ``dest + '.part'`` when the server honours Range requests.

    ``reserve`` (a multiple of the file's size) is checked free on disk beyond the download itself, for
    what extracting it will write. A failed request raises :class:`DownloadError` with one line naming the
    URL and ``archive_hint`` (how to pass the file with ``--archive`` instead).
    """
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is already whole: the server has nothing past its end
            os.replace(part, dest)
            return
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}; {archive_hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {url}: {reason}; {archive_hint}") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file: start the part over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if total is not None:
            ensure_free_space(os.path.dirname(dest), int((total - have) + total * reserve), f"Downloading {url}")
        if resumed:
            print(f"resuming {os.path.basename(dest)} at byte {have:,}")
        try:
            with (
                open(part, "ab" if resumed else "wb") as f,
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(dest)) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:  # the connection dropped: the part stays for the next run to resume
            raise DownloadError(f"download of {url} stopped at byte {os.path.getsize(part):,} ({e}); "
                                "run again to resume") from None
    if total is not None and os.path.getsize(part) != total:
        raise DownloadError(
            f"download of {url} stopped at byte {os.path.getsize(part):,} of {total:,}; run again to resume"
        )
    os.replace(part, dest)


# -------------------------------------------------------------------------------------------------- extract


def _unsafe_name(name: str) -> str | None:
    """Why an archive member name may not be extracted, or None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in path.parts:
        return "has a '..' component"
    return None


def _outside(dest: str, member_dir: str, target: str) -> bool:
    """Does a link at ``member_dir`` with ``target`` resolve outside ``dest``?"""
    if PurePosixPath(target).is_absolute():
        return True
    resolved = os.path.normpath(os.path.join(dest, member_dir, target))
    return os.path.commonpath([os.path.abspath(dest), os.path.abspath(resolved)]) != os.path.abspath(dest)


def _refuse(archive: str, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: member {member!r} {why}; refusing to extract this archive")


def _tar_filter(archive: str, dest: str):
    """tarfile extraction filter: our refusals first, then the standard library's ``data`` filter."""
    data_filter = getattr(tarfile, "data_filter", None)

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        why = _unsafe_name(member.name)
        if why:
            raise _refuse(archive, member.name, why)
        if member.issym() and _outside(dest, os.path.dirname(member.name), member.linkname):
            raise _refuse(archive, member.name, f"is a link to {member.linkname!r}, outside the destination")
        if member.islnk() and (_unsafe_name(member.linkname) or _outside(dest, "", member.linkname)):
            raise _refuse(archive, member.name, f"is a link to {member.linkname!r}, outside the destination")
        if data_filter is None:
            return member
        try:
            return data_filter(member, path)
        except tarfile.FilterError as e:
            raise _refuse(archive, member.name, f"is refused by tarfile's data filter ({e})") from None

    return check


def extract(archive: str, dest: str) -> None:
    """Unpack a tar (any compression) or zip ``archive`` into the existing folder ``dest``.

    Unsafe members raise :class:`UnsafeArchiveError`; the caller extracts into a temporary folder, so what
    was written before the refusal is thrown away with it.
    """
    if archive.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                why = _unsafe_name(info.filename)
                if why:
                    raise _refuse(archive, info.filename, why)
                if stat.S_ISLNK(info.external_attr >> 16):
                    target = zf.read(info).decode("utf-8", "replace")
                    if _outside(dest, os.path.dirname(info.filename), target):
                        raise _refuse(archive, info.filename, f"is a link to {target!r}, outside the destination")
            zf.extractall(dest)
        return
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter=_tar_filter(archive, dest))
    except tarfile.ReadError as e:
        raise ArchiveError(f"{archive} is not a readable tar or zip archive ({e})") from None
