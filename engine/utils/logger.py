"""Tee ``sys.stdout`` into ``log.txt`` as Dassl does, with every line flushed to disk.

Lines are plain ``print`` output with no prefixes: result parsers match them by equality.
One deviation: a new run into a folder that already has a log moves the old one aside
(``log.txt-<timestamp>``) and writes ``log.txt`` itself. Dassl did the opposite, so ``log.txt`` stayed the
interrupted run and every tool that reads it (the scripts' skip-if-done, ``parse_test_res``, tables,
sweeps) counted a resumed, finished run as unfinished.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

from .tools import mkdir_if_missing

__all__ = ["Logger", "setup_logger"]


class Logger:
    """A stdout replacement writing to the console and to a file.

    Every write is flushed to the file immediately so a crash or a kill never loses a printed line
    (Dassl's BMIP flow ended with ``os._exit`` and could drop the final result lines).
    """

    def __init__(self, fpath: str, console: TextIO | None = None) -> None:
        self.console = console if console is not None else sys.stdout
        self.fpath = fpath
        mkdir_if_missing(os.path.dirname(os.path.abspath(fpath)))
        self.file: TextIO | None = open(fpath, "w")
        self._pending = ""  # console text after the last newline (terminals only, see _to_console)

    def write(self, msg: str) -> int:
        self._to_console(msg)
        if self.file is not None:
            try:
                self.file.write(msg)
                self.file.flush()
            except OSError as e:  # a full disk or a vanished mount: stop logging, say so once
                file, self.file = self.file, None
                try:
                    file.close()
                except OSError:
                    pass
                error = OSError(
                    f"Cannot write the log {self.fpath}: {e.strerror or e} (errno {e.errno}); the checkpoints "
                    "saved so far are intact: free space and re-run the same command to resume"
                )
                error.errno = e.errno
                raise error from e
        return len(msg)

    def _to_console(self, msg: str) -> None:
        """On a terminal, whole lines only, each written with the progress bars cleared and redrawn.

        ``print`` writes a line in pieces; drawing the bar between them would leave bar snapshots
        among the log lines (tqdm's bar lives on stderr, the same terminal).
        """
        if not _isatty(self.console):
            self.console.write(msg)
            return
        text = self._pending + msg
        head, newline, self._pending = text.rpartition("\n")
        if newline:
            with tqdm.external_write_mode(file=sys.stderr):
                self.console.write(head + newline)
                self.console.flush()

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            with tqdm.external_write_mode(file=sys.stderr):
                self.console.write(pending)
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> object:
        # Anything else a library asks of stdout (encoding, fileno ...) comes from the console.
        if name == "console":
            raise AttributeError(name)
        return getattr(self.console, name)

    def close(self) -> None:
        """Close the file and, if this logger is the active stdout, restore the console."""
        if self.file is not None:
            self.flush()
            self.file.close()
            self.file = None
        if sys.stdout is self:
            sys.stdout = self.console

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


def _keep_previous(fpath: str) -> str | None:
    """Move an existing ``fpath`` to ``fpath-<timestamp>`` (a counter if two runs share a second)."""
    if not os.path.exists(fpath):
        return None
    stamped = fpath + time.strftime("-%Y-%m-%d-%H-%M-%S")
    candidate, n = stamped, 1
    while os.path.exists(candidate):
        candidate = f"{stamped}-{n}"
        n += 1
    os.replace(fpath, candidate)
    return candidate


def setup_logger(output: str | None = None) -> Logger | None:
    """Tee stdout to ``output`` (a .txt/.log file) or ``output/log.txt``; None does nothing.

    An existing log is moved to ``<log>-%Y-%m-%d-%H-%M-%S`` first, and the new log's first line names it,
    so ``log.txt`` is always the latest run and the older ones stay readable.
    Returns the Logger so callers (``train.py``, tests) can close it and restore stdout.
    """
    if output is None:
        return None
    fpath = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
    previous = _keep_previous(fpath)
    logger = Logger(fpath)
    sys.stdout = logger
    if previous is not None:
        print(f"The previous log of this folder is kept as {os.path.basename(previous)}")
    return logger
