"""The README's methods table (section "Every row of the paper's tables"): every trainable
count it gives is the one dgl-rs builds for ViT-B/32 at T=12 (what `dgl-rs methods`
prints), so the table cannot drift from the code again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dgl_rs
from dgl_rs.factory import trainable_counts
from dgl_rs.methods import METHODS

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Every row of the paper's tables"
#: A row of the methods table: | `NAME` | what it adds | 1,234 | paper |
ROW = re.compile(r"^\| `([a-z0-9+-]+)` \| .* \| ([\d,]+) \| [^|]* \|$", re.M)


def readme_counts() -> dict[str, int]:
    """``{method: trainable count}`` from the README's methods table."""
    section = README.read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    return {name: int(count.replace(",", "")) for name, count in ROW.findall(section)}


@pytest.fixture(scope="module")
def counts() -> dict[str, int]:
    """Every method's trainable count on ViT-B/32 (random weights, ~150M parameters: built once)."""
    clip, _, _ = dgl_rs.load_clip("ViT-B-32-quickgelu", "none")
    return trainable_counts(clip, num_frames=12)


def test_the_table_has_a_row_for_every_method():
    assert sorted(readme_counts()) == sorted(METHODS)


def test_every_count_in_the_table_is_what_dgl_rs_builds(counts):
    wrong = {name: (given, counts[name]) for name, given in readme_counts().items() if given != counts[name]}
    assert not wrong, f"README count -> built count: {wrong}"
