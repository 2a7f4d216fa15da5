"""Result parsing, the paper's tables and the sweep runner, plus a few model-side tools.

Run the command-line tools from the repository root as modules, e.g. ``python -m tools.tables 1``.

No torch: ``tables``, ``parse_test_res``, ``plan``, ``results``, ``metrics``, ``sweep``, ``layout``,
``run_record`` (what a run folder was made with), ``run_lock`` (one writer per folder) and
``reliability_cases``
import neither torch nor the project's engine, so collecting results, printing tables and planning or
running sweeps work on any machine with numpy and tabulate (``tests/test_results.py`` checks it).

With torch: ``check_data`` (builds the dataset readers of the engine), ``prepare_data`` (with ``archives``
and ``data_sources``: fetches and lays out the datasets, then runs ``check_data``), ``convert_official`` (reads
official checkpoints) and ``plot_gates`` (torch only for ``--source checkpoints`` or its fallback to
the checkpoints; TensorBoard events need only the tensorboard package).
"""
