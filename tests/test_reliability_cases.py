"""docs/RELIABILITY.md's table of cases is the one the tests declare (``tools.reliability_cases``)."""

from __future__ import annotations

from tools import reliability_cases


def test_the_reliability_doc_lists_exactly_the_cases_the_tests_declare():
    cases = reliability_cases.collect()
    assert len(cases) >= 20 and all(c.test.startswith("tests/test_") for c in cases)
    doc = reliability_cases.DOC.read_text()
    assert reliability_cases.updated(doc, cases) == doc, "run: python -m tools.reliability_cases --write"


def test_a_changed_case_makes_the_doc_stale(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n\n@pytest.mark.reliability_case('x', 'an input', 'an outcome')\ndef test_x():\n    pass\n"
    )
    (case,) = reliability_cases.collect(tmp_path)
    assert case == reliability_cases.Case("x", "an input", "an outcome", f"{tmp_path.name}/test_x.py::test_x")
    doc = reliability_cases.DOC.read_text()
    assert reliability_cases.updated(doc, [case]) != doc
