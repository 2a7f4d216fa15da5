"""The toy-CLIP commands the documents print beside measured numbers are the runs that made the numbers.

Re-running the mini Table 1 takes some 20 minutes, so this is a consistency check of options, not a re-run:
every ``toy:clip`` command in README.md and docs/*.md must pass exactly the options of the learning tests
(``tests/test_learning.py`` ``LEARN_OPTS``, which train every trainer with them and check it learns), the
mini Table 1 command must list the methods of the table printed under it, and README's BMIP paper-preset
command must be, argument for argument, the run that table's sweep plans for BMIP-paper, seed 1.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

from test_learning import LEARN_OPTS

from tools import plan

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def toy_commands() -> list[tuple[str, list[str], str]]:
    """(document, the command's words, the text after its block) of every bash block using ``toy:clip``."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
            for command in block.group(1).replace("\\\n", " ").splitlines():
                words = shlex.split(command, comments=True)
                if "toy:clip" in words and "bench.run" not in words:  # a benchmark times steps, no accuracy
                    found.append((doc.name, words, text[block.end() :]))
    return found


def overrides(words: list[str]) -> dict[str, object]:
    """The ``KEY VALUE`` pairs from the first upper-case key on (``--opts`` lists included)."""
    start = next(i for i, w in enumerate(words) if re.fullmatch(r"[A-Z_]+(\.[A-Z_0-9]+)+", w))
    pairs = words[start:]
    assert len(pairs) % 2 == 0, words
    return {k: ast.literal_eval(v) if v.startswith("[") else v for k, v in zip(pairs[::2], pairs[1::2])}


def test_every_toy_clip_command_uses_the_learning_tests_options():
    commands = toy_commands()
    assert {doc for doc, _, _ in commands} >= {"README.md", "TOY_CLIP.md"}
    learning = overrides(LEARN_OPTS)
    for doc, words, _ in commands:
        given = overrides(words)
        given.pop("DATASET.SUBSAMPLE_CLASSES", None)  # train.py commands name the label space themselves
        assert given == learning, (doc, words)


def test_mini_table_command_lists_the_printed_rows():
    doc, words, after = next(c for c in toy_commands() if "scripts/tables/table1.sh" in c[1])
    methods = words[words.index("--methods") + 1 : words.index("--datasets")]
    table = re.search(r"\n(\| Method .*?)\n\n", after, re.S).group(1)
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert methods == rows, doc


def test_readme_paper_preset_command_is_the_mini_table_run(tmp_path):
    table_words = next(c[1] for c in toy_commands() if "scripts/tables/table1.sh" in c[1])
    opts = table_words[table_words.index("--opts") + 1 :]
    (step, *_), *_ = (job.steps for job in plan.open_world_jobs(["BMIP-paper"], ["toy_shapes"], [1], tmp_path, opts))
    readme = next(c[1] for c in toy_commands() if c[0] == "README.md" and "scripts/bmip/base2new_train.sh" in c[1])
    env = dict(w.split("=", 1) for w in readme[: readme.index("bash")])
    assert env["CFG"] == dict(step.env)["CFG"] == "BMIP_ctx2_dp9_lr2_paper"
    script, *args = readme[readme.index("bash") + 1 :]
    assert ROOT / script == Path(step.command[1]) and args == list(step.command[2:])
