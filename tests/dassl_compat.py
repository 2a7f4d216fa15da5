"""``@compat_row``: the row of docs/DASSL_COMPAT.md's table that a test shows (tools/dassl_compat_table.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Test = TypeVar("Test", bound=Callable)


def compat_row(client: str, status: str, shows: str) -> Callable[[Test], Test]:
    """Mark a test as the evidence for one row (literal strings: the table is read without running tests)."""

    def mark(test: Test) -> Test:
        test.compat_row = (client, status, shows)
        return test

    return mark
