"""Result parsing, the paper's tables and the sweep runner.

Run the command-line tools from the repository root as modules, e.g. ``python -m tools.tables 1``.
Nothing here imports torch: collecting results and printing tables works on any machine.
"""
