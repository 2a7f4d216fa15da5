"""Writers of Dassl-format logs and fake method scripts for the result, table and sweep tests."""

from __future__ import annotations

from pathlib import Path

LIB_SH = """#!/usr/bin/env bash
lib_setup() { TRAINER="$1"; CFG="${CFG:-$2}"; }
lib_die() { echo "error: $*" >&2; exit 2; }
base2new_train() { :; }
base2new_test() { :; }
xd_train() { :; }
xd_test() { :; }
zeroshot() { :; }
fewshot() { :; }
lib_dataset_dir() { echo "$1"; }
"""


def write_train_log(
    run_dir: Path, accuracy: float, decimals: int = 2, val: float | None = 11.0, config: str = ""
) -> Path:
    """A training log: a validation block before ``Finish training`` (must be ignored), then the test.

    ``config`` is the printed config (``str(cfg)``), placed where train.py prints it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = (
        ["************", "** Config **", "************", config, "Collecting env info ..."] if config else []
    )
    lines += ["epoch [1/2] batch [1/1] loss 1.0", "Evaluate on the *val* set", "=> result"]
    if val is not None:
        lines.append(f"* accuracy: {val:.{decimals}f}%")
    lines += [
        "Finish training",
        "Deploy the last-epoch model",
        "Evaluate on the *test* set",
        "=> result",
        "* total: 1,000",
        "* correct: 800",
        f"* accuracy: {accuracy:.{decimals}f}%",
        f"* error: {100 - accuracy:.{decimals}f}%",
        "* macro_f1: 42.00%",
        "Elapsed: 0:00:01",
    ]
    path = run_dir / "log.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_test_log(run_dir: Path, accuracy: float, decimals: int = 2) -> Path:
    """An eval-only log: no ``Finish training``, the result block starts at ``=> result``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "log.txt"
    path.write_text(
        "Loading weights to prompt_learner from model.pth.tar-5\n"
        "Evaluate on the *test* set\n=> result\n* total: 500\n"
        f"* accuracy: {accuracy:.{decimals}f}%\n* error: {100 - accuracy:.{decimals}f}%\n"
    )
    return path


def write_scripts(root: Path, methods: dict[str, tuple[str, str, str]]) -> Path:
    """``root/scripts`` with lib.sh and, per script folder, the usual scripts calling ``lib_setup``.

    ``methods`` maps script folder -> (TRAINER, CFG, LOADEP); LOADEP "-" makes a zero-shot method.
    """
    scripts = root / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "lib.sh").write_text(LIB_SH)
    for folder, (trainer, cfg, loadep) in methods.items():
        (scripts / folder).mkdir(exist_ok=True)
        for name, action in (
            ("base2new_train", "base2new_train"),
            ("base2new_test", "base2new_test"),
            ("xd_train", "xd_train"),
            ("xd_test", "xd_test"),
            ("dg_test", "xd_test"),
            ("fewshot", "fewshot"),
        ):
            (scripts / folder / f"{name}.sh").write_text(
                '#!/usr/bin/env bash\nsource "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"\n'
                f'lib_setup {trainer} {cfg} {loadep}\n{action} "$@"\n'
            )
    return scripts


def printed_header(argv: list[str]) -> str:
    """The arguments and config blocks train.py prints at the top of ``log.txt`` for ``argv``."""
    import contextlib
    import io

    import train

    args = train.build_parser().parse_args(argv)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        train.print_args(args, train.setup_cfg(args))
    return buffer.getvalue() + "Collecting env info ...\n"


def write_engine_log(
    run_dir: Path,
    argv: list[str],
    accuracy: float | None,
    epochs: list[tuple[float, float, float]] = (),
    batches: int = 4,
    extra: str = "",
) -> Path:
    """A log as train.py writes it: the printed header, ``extra`` lines, a batch line per batch of each
    epoch ``(loss, acc, lr)`` (the running means end at the given values), then ``Finish training`` and
    the test block; ``accuracy`` None leaves the run unfinished. An ``--eval-only`` argv gives no batch
    lines and a result block without ``Finish training``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = (
        [printed_header(argv).rstrip("\n"), extra.rstrip("\n")]
        if extra
        else [printed_header(argv).rstrip("\n")]
    )
    eval_only = "--eval-only" in argv
    for epoch, (loss, acc, lr) in enumerate(epochs, start=1):
        for batch in range(1, batches + 1):
            run_loss, run_acc = loss + (batches - batch) * 0.1, acc - (batches - batch)
            lines.append(
                f"epoch [{epoch}/{len(epochs)}] batch [{batch}/{batches}] time 0.083 (0.188) data 0.000 (0.024) "
                f"loss {run_loss + 0.3:.4f} ({run_loss:.4f}) acc {run_acc + 5:.4f} ({run_acc:.4f}) lr {lr:.4e} "
                "eta 0:00:01"
            )
    if accuracy is not None:
        if not eval_only:
            lines += ["Finish training", "Deploy the last-epoch model"]
        lines += [
            "Evaluate on the *test* set",
            "=> result",
            "* total: 1,000",
            f"* accuracy: {accuracy:.2f}%",
            f"* error: {100 - accuracy:.2f}%",
        ]
        if not eval_only:
            lines.append("Elapsed: 0:00:01")
    path = run_dir / "log.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
