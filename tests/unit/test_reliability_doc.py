"""docs/RELIABILITY.md must say what the fault tests do."""

from tests.lab import reliability


def test_doc_matches_the_tests() -> None:
    assert reliability.DOC.read_text() == reliability.render(), \
        "docs/RELIABILITY.md is stale: run python -m tests.lab.reliability"


def test_every_fault_row_is_complete() -> None:
    rows = reliability.fault_rows()
    assert len(rows) >= 12
    assert all(all(cell.strip() for cell in row) for row in rows)
