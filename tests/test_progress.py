"""Progress bars only on a terminal: a log file or CI gets one line per epoch, no carriage returns."""

from __future__ import annotations

import io
import re
import sys

import pytest

from dgl_rs.util import progress
from dgl_rs.train import main as train_main

from test_train import patch_standins, toy_argv


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


def _drive(stream, enabled=True):
    bar = progress.progress_bar(total=5, file=stream, enabled=enabled, desc="x", mininterval=0)
    for _ in range(5):
        bar.update(1)
        bar.set_postfix(loss="1.0")
    bar.close()
    return list(progress.progress_bar(range(3), file=stream, enabled=enabled))


def test_bar_only_on_a_terminal():
    log = io.StringIO()  # a log file, a pipe, CI
    assert _drive(log) == [0, 1, 2]  # still iterates
    assert log.getvalue() == ""
    tty = FakeTTY()
    assert _drive(tty) == [0, 1, 2]
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()
    off = FakeTTY()
    _drive(off, enabled=False)  # --no-progress, or not the master rank
    assert off.getvalue() == ""


def test_interactive_survives_odd_streams():
    assert progress.interactive(FakeTTY()) and not progress.interactive(io.StringIO())
    closed = io.StringIO()
    closed.close()
    assert not progress.interactive(closed)  # ValueError from isatty: not a terminal
    assert not progress.interactive(object())


def _run(tmp_path, monkeypatch, capsys):
    patch_standins(monkeypatch)
    argv = [a for a in toy_argv(tmp_path) if a != "--no-progress"]
    capsys.readouterr()
    assert train_main.main(argv) == 0
    return capsys.readouterr().err


def test_training_log_is_one_line_per_epoch_without_a_terminal(tmp_path, monkeypatch, capsys):
    err = _run(tmp_path, monkeypatch, capsys)
    assert "\r" not in err
    assert re.findall(r"epoch (\d) done: mean loss", err) == ["1", "2", "3"]
    log = (tmp_path / "run" / "out.log").read_text()
    assert "\r" not in log and len(re.findall(r"epoch \d done", log)) == 3


def test_training_draws_bars_on_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "interactive", lambda stream=None: True)
    err = _run(tmp_path, monkeypatch, capsys)
    assert "\r" in err and "epoch 1/3" in err  # the step bar
    assert "encode toy videos" in err  # the evaluation's bars go through the same helper
