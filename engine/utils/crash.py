"""Named crash points: a test seam that kills the process at an exact place, as a cluster would.

Training code calls :func:`crash_point` at the places where an interruption is most damaging. Normally
this does nothing. With the environment variable ``ENGINE_KILL_AT="<point>:<n>"`` the process sends
itself SIGKILL the ``n``-th time it reaches ``<point>`` (no ``finally`` blocks, no flushing of Python
buffers: exactly what a scheduler's kill or an out-of-memory kill does). The crash tests start
``python train.py`` with this variable and restart it with the same command to check that the resumed
run ends where an uninterrupted one does. See docs/RELIABILITY.md.

Points:

- ``train-step``: an optimizer step has been taken (after ``forward_backward`` returned);
- ``checkpoint-temp-written``: a checkpoint's temporary file is complete but not yet renamed into place;
- ``checkpoint-renamed``: the checkpoint file is in place, the ``checkpoint`` pointer not yet updated.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["CRASH_POINTS", "KILL_ENV_VAR", "crash_point"]

KILL_ENV_VAR = "ENGINE_KILL_AT"
CRASH_POINTS = ("train-step", "checkpoint-temp-written", "checkpoint-renamed")

_reached: Counter[str] = Counter()


def _parse(spec: str) -> tuple[str, int]:
    point, _, count = spec.rpartition(":")
    if point not in CRASH_POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"{KILL_ENV_VAR}={spec!r}: expected '<point>:<n>' with point one of {', '.join(CRASH_POINTS)} "
            "and n >= 1"
        )
    return point, int(count)


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``ENGINE_KILL_AT`` asks for this visit of point ``name``."""
    spec = os.environ.get(KILL_ENV_VAR)
    if not spec:
        return
    point, count = _parse(spec)
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)
