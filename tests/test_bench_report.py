"""The README's performance table is generated from the committed results file, never typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import BEGIN, END, LATEST, README, Figure, main, markdown, replace_block


def test_the_readme_table_is_the_committed_results_file() -> None:
    assert main(["--check"]) == 0, "run: python -m bench.report (after make bench)"


def test_a_figure_edited_by_hand_is_caught(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text(encoding="utf-8").replace(" | yes |", " | NO |", 1),
                      encoding="utf-8")
    assert main(["--check", "--readme", str(readme)]) == 1
    assert main(["--readme", str(readme)]) == 0  # regenerated from the file
    assert readme.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")


def test_the_block_lists_every_figure_with_its_counts() -> None:
    document = json.loads(LATEST.read_text(encoding="utf-8"))
    block = markdown(document, "latest.json")
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(document["figures"])  # the header, then one row per figure
    for raw in document["figures"]:
        figure = Figure(**raw)
        assert figure.value in block and (not figure.counts or figure.counts in block)
    assert str(document["settings"]["note"]) in block


def test_without_markers_nothing_is_written() -> None:
    with pytest.raises(ValueError, match="no block"):
        replace_block("# README\n", "table")
    assert replace_block(f"a\n{BEGIN}\nold\n{END}\nb\n", "new") == f"a\n{BEGIN}\nnew\n{END}\nb\n"
