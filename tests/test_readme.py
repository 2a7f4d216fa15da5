"""README's quick start, run as a new user would: every command of its first code block exits 0.

The commands are taken from README.md itself (so the test follows the README), with ``./data`` and
``output/`` moved into a temporary folder so the run leaves nothing in the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    """The shell commands of the first ``bash`` block after the "Quick start" heading, one per entry."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_quick_start_block_is_what_the_test_runs():
    commands = quick_start_commands()
    assert len(commands) >= 4 and all(c.startswith("python ") for c in commands), commands
    assert any("tools.check_data" in c for c in commands)


def test_every_quick_start_command_exits_zero(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for command in quick_start_commands():
        command = command.replace("./data", str(tmp_path / "data")).replace("output/", f"{tmp_path}/output/")
        argv = shlex.split(command)
        argv[0] = sys.executable
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
