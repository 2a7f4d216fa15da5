"""Sections of the docs generated from code or tests, so that a document can claim no more than they show.

Each generated section sits between two HTML-comment markers of its document. What every generator shares
lives here: reading the decorators that tests carry (with ``ast``: nothing is imported or run) and
rewriting the section between its markers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

__all__ = ["decorator_calls", "replace_section"]


def decorator_calls(path: Path, name: str) -> Iterator[tuple[ast.FunctionDef, ast.Call]]:
    """``(function, call)`` for each ``@name(...)`` or ``@<x>.name(...)`` decorating a function of ``path``."""
    tree = ast.parse(Path(path).read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            func = decorator.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == name:
                yield node, decorator


def replace_section(text: str, begin: str, end: str, body: str, where: object) -> str:
    """``text`` with the lines between the markers ``begin`` and ``end`` replaced by ``body``.

    Raises ValueError naming ``where`` (the document) when a marker is missing.
    """
    if begin not in text or end not in text:
        raise ValueError(f"{where} lacks the markers {begin!r} ... {end!r}")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"
