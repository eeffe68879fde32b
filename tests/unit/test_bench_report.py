"""docs/BENCHMARKS.md is rendered from the committed results; a partial run keeps the rest."""

import json
import subprocess
from pathlib import Path

import pytest

from bench import report, results

NEW = {"date": "2027-01-02 03:04 UTC", "commit": "abc1234", "machine": ["- nproc: 2"]}


def _sections(doc: str) -> dict[str, str]:
    """Each '## title' section of the doc, by title, text up to the next section."""
    return {part.split("\n", 1)[0]: part for part in doc.split("\n## ")[1:]}


def test_doc_is_rendered_from_the_committed_results() -> None:
    assert report.DOC.read_text() == report.render(results.load()), \
        "docs/BENCHMARKS.md is stale: render it from docs/benchmarks.json (bench/report.py)"


def test_results_file_is_committed_not_ignored() -> None:
    """A fresh clone must have every figure: the results may not live in an ignored folder."""
    ignored = subprocess.run(["git", "-C", str(results.REPO), "check-ignore", "-q",
                              str(results.FILE)], check=False)
    assert ignored.returncode == 1, f"{results.FILE} is ignored by git"
    assert set(report.ORDER) <= set(results.load()), "a benchmark has no committed result"


def test_partial_run_keeps_what_it_did_not_measure(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    before = results.load()
    old_doc = report.render(before)
    store, doc = tmp_path / "benchmarks.json", tmp_path / "BENCHMARKS.md"
    store.write_text(json.dumps(before))
    monkeypatch.setattr(results, "FILE", store)
    monkeypatch.setattr(report, "DOC", doc)

    measured = {"noop", "push"}  # what `python3 -m bench noop push` records, then renders
    for name in sorted(measured):
        row = {"benchmark": f"{name} new row", "ours": "1 s", "reference": "2 s", "ratio": 0.5,
               "goal": "<= 1", "met": True}
        results.record({"name": name, "rows": [row], "details": f"new {name} details",
                        "seconds": 5.0, "extra": {}, "command": f"python3 -m bench {name}",
                        **NEW})
    report.write(42.0, full=False, measured={"commit": NEW["commit"], "command": "x",
                                             "machine": NEW["machine"]})
    new_doc = doc.read_text()

    old, new = _sections(old_doc), _sections(new_doc)
    assert list(new) == list(old)
    for name in report.ORDER:
        title = report.TITLES[name]
        if name in measured:
            assert new[title] != old[title]
            assert (f"_{NEW['date']}, 5 s, code at commit {NEW['commit']}, command: "
                    f"`python3 -m bench {name}`._") in new[title]
            assert f"new {name} details" in new[title]
            assert f"| {name} new row |" in new_doc
        else:  # the section as it was: its own date, commit, command and figures
            assert new[title] == old[title], f"{name} section changed by a run that skipped it"
            stamp = f"_{before[name]['date']}, {before[name]['seconds']:.0f} s, code at commit "
            assert stamp + before[name]["commit"] in new[title]
        for row in before[name]["rows"]:
            assert (f"| {row['benchmark']} | {row['ours']} |" in new_doc) == (name not in measured)
    # not a full run: the full run's line and machine are as they were
    assert new["Machine"] == old["Machine"]
    assert new_doc.split("\n## ")[0] == old_doc.split("\n## ")[0]
