"""Figures: the library never switches matplotlib's backend (a notebook user's session
keeps its own) and writes every PNG atomically (the previous file or a complete new one)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

from matplotlib.image import imread  # noqa: E402

import dgl_rs  # noqa: E402
import dgl_rs.services.explain  # noqa: E402
from dgl_rs.experiments.report import bar_chart  # noqa: E402
from dgl_rs.train.logger import RunLogger  # noqa: E402

PACKAGE = Path(dgl_rs.__file__).parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OLD = b"the previous plot"


def _matplotlib_use_calls(tree: ast.AST) -> list[int]:
    """Lines that call ``matplotlib.use`` (however imported) or import pyplot."""
    aliases = {"matplotlib"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "matplotlib":
                    aliases.add(a.asname or a.name)
                if a.name.startswith("matplotlib.pyplot"):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matplotlib"):
            if node.module == "matplotlib.pyplot" or any(a.name in ("use", "pyplot") for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use":
            if isinstance(node.func.value, ast.Name) and node.func.value.id in aliases:
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_a_backend_switch():
    code = "import matplotlib as mpl\nmpl.use('Agg')\nfrom matplotlib import use\nimport matplotlib.pyplot as plt\n"
    assert sorted(_matplotlib_use_calls(ast.parse(code))) == [2, 3, 4]
    assert _matplotlib_use_calls(ast.parse("from matplotlib.figure import Figure\nFigure().savefig('x.png')\n")) == []


def test_no_module_of_the_package_switches_the_matplotlib_backend():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40 and PACKAGE / "train" / "logger.py" in modules
    found = {str(p.relative_to(PACKAGE)): lines for p in modules
             if (lines := _matplotlib_use_calls(ast.parse(p.read_text(encoding="utf-8"))))}
    assert found == {}, f"matplotlib.use / pyplot in library code: {found}"


def test_plotting_leaves_pyplot_and_the_backend_alone(tmp_path):
    """In a fresh process (as a notebook would be): the run plots and the benchmark chart
    import no pyplot and leave the backend matplotlib chose."""
    code = f"""
import sys, matplotlib
def refuse(*args, **kwargs):
    raise AssertionError("matplotlib.use called")
matplotlib.use = refuse
raw_backend = lambda: dict.__getitem__(matplotlib.rcParams, "backend")  # without resolving it
before = raw_backend()
from dgl_rs.train.logger import RunLogger
from dgl_rs.experiments.report import bar_chart
log = RunLogger({str(tmp_path)!r}, tensorboard=False)
log.log(1, {{"train/loss": 1.0}}); log.log(2, {{"test/R@1": 5.0}}, epoch=1)
assert len(log.plot()) == 2
assert bar_chart({{"m": {{"static": {{"t2v": {{"R@1": 1.0}}}}, "temporal": {{"t2v": {{"R@1": 2.0}}}}, "reversal": 50.0}}}},
                 __import__("pathlib").Path({str(tmp_path)!r}) / "b.png") is not None
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
assert raw_backend() == before, (before, raw_backend())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _methods() -> dict:
    split = {"t2v": {"R@1": 40.0}}
    return {"zero-shot": {"static": split, "temporal": split, "reversal": 50.0},
            "dgl-linear": {"static": split, "temporal": {"t2v": {"R@1": 60.0}}, "reversal": 70.0}}


def _run_logger(folder: Path) -> RunLogger:
    log = RunLogger(folder, tensorboard=False)
    log.log(1, {"train/loss": 2.0})
    log.log(2, {"train/loss": 1.0})
    log.log(2, {"test/R@1": 5.0}, epoch=1)
    return log


#: name -> (draw every PNG of it into a folder, the PNGs it writes)
WRITERS = {
    "run plots": (lambda d: _run_logger(d).plot(), ("loss.png", "recall.png")),
    "benchmark chart": (lambda d: bar_chart(_methods(), d / "benchmark.png"), ("benchmark.png",)),
    "explain.save_figure": (lambda d: dgl_rs.services.explain.save_figure(Figure(figsize=(2, 2)), d / "explain.png", dpi=50),
                            ("explain.png",)),
}


def _complete_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE) and data.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_png_is_the_previous_file_or_a_complete_new_one(name, tmp_path, monkeypatch):
    write, names = WRITERS[name]
    for n in names:
        (tmp_path / n).write_bytes(OLD)
    seen_during_save = []
    real_savefig = Figure.savefig

    def torn_savefig(self, target, *args, **kwargs):
        """Write half a PNG, note what the final files hold meanwhile, then fail."""
        seen_during_save.append({n: (tmp_path / n).read_bytes() for n in names})
        real_savefig(self, target, *args, **kwargs)
        if hasattr(target, "truncate"):
            target.truncate(100)
        else:
            Path(target).write_bytes(Path(target).read_bytes()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", torn_savefig)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path)
    assert seen_during_save and all(s == {n: OLD for n in names} for s in seen_during_save)
    assert {n: (tmp_path / n).read_bytes() for n in names} == {n: OLD for n in names}
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == sorted(names)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind

    monkeypatch.setattr(Figure, "savefig", real_savefig)
    write(tmp_path)
    for n in names:
        data = (tmp_path / n).read_bytes()
        assert _complete_png(data), n
        assert imread(str(tmp_path / n)).ndim == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
