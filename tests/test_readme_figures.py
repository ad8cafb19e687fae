"""The README's figures are what the commands print: the demo table is `summary.md` of the
`make demo` run whose JSON is committed as docs/demo-benchmark.json."""

from __future__ import annotations

import json
from pathlib import Path

from dgl_rs.experiments.report import summary_table

ROOT = Path(__file__).resolve().parents[1]


def readme_table(first_row: str) -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_row))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[start:end])


def test_the_demo_table_is_the_demo_runs_summary():
    doc = json.loads((ROOT / "docs" / "demo-benchmark.json").read_text())
    assert readme_table("| method | trainable | lr | s/step | peak MiB | static t2v |") == summary_table(doc["methods"])


def test_the_table3_table_is_the_table3_runs():
    from dgl_rs.experiments.report import table3_markdown

    doc = json.loads((ROOT / "docs" / "table3-benchmark.json").read_text())
    assert readme_table("| table | paper's row | dgl-rs entry |") == table3_markdown(doc["methods"], doc["seeds"])


def test_the_claims_table_is_decided_on_the_committed_runs():
    from dgl_rs.experiments.claims import claims_table, load_runs

    paths = [ROOT / "docs" / name for name in CLAIMS_DOCUMENTS]
    assert readme_table("| claim | a vs b |") == claims_table(load_runs(paths)[0])[1]


#: The benchmark documents the README's claims table is decided on, in the order given to `dgl-rs claims`.
CLAIMS_DOCUMENTS = ("table3-benchmark.json", "methods-benchmark.json")


def test_the_shifted_methods_table_is_the_methods_runs():
    from dgl_rs.experiments.report import seeds_table

    doc = json.loads((ROOT / "docs" / "methods-benchmark.json").read_text())
    assert readme_table("| method | trainable | lr | s/step | static t2v R@1 |") == seeds_table(doc["methods"])
