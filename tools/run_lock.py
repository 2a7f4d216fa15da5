"""One writer per folder: an exclusive lock file holding the owner's pid and host.

``train.py`` locks its output folder (``.lock``) and ``tools.sweep`` its output root (``.sweep.lock``)
for as long as they run. The file is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS) and
removed on exit. A lock left by a process that no longer exists on this host (SIGKILL, a power cut)
is stale: it is removed with a notice and taken. A lock held from another host cannot be checked from
here; the message names the host so that the user can.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

__all__ = ["FolderBusy", "FolderLock"]

# A lock file with no readable owner (its writer was killed between creating and writing it) is stale
# after this many seconds.
_UNREADABLE_STALE_S = 10.0


class FolderBusy(OSError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class FolderLock:
    """``with FolderLock(folder, what="OUTPUT_DIR"):`` - exclusive ownership of ``folder`` while inside."""

    def __init__(self, folder: str | Path, name: str = ".lock", what: str = "folder") -> None:
        self.path = Path(folder) / name
        self.what = what
        self.owner = f"{os.getpid()} {socket.gethostname()}"
        self.held = False

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid, host = self.path.read_text().split(maxsplit=1)
            return int(pid), host.strip()
        except (OSError, ValueError):
            return None

    def _stale(self, holder: tuple[int, str] | None) -> bool:
        if holder is None:
            try:
                return time.time() - self.path.stat().st_mtime > _UNREADABLE_STALE_S
            except FileNotFoundError:
                return True
        pid, host = holder
        return host == socket.gethostname() and not _alive(pid)

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    who = f"process {holder[0]} on host {holder[1]}" if holder else "a process that is starting"
                    raise FolderBusy(
                        f"{self.what} {self.path.parent} is in use by {who} (lock file {self.path}); wait for "
                        "it to end, or delete the lock file if that process is gone"
                    ) from None
                print(f"Removing the stale lock {self.path} of {holder[0] if holder else 'an unknown'} process, "
                      "which no longer runs", file=sys.stderr)  # fmt: skip
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            self.held = True
            return

    def release(self) -> None:
        if self.held and self._holder() == (os.getpid(), socket.gethostname()):
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
