"""The package's layout as issue 17 fixed it: open_clip is read by backbone/ only, every
method option is settable from the command line, old module paths still import (with a
DeprecationWarning naming the new one)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import dgl_rs
from dgl_rs import _compat
from dgl_rs.methods import METHODS, settable_options
from dgl_rs.train.params import RECIPE_OPTIONS, method_options, parse_args

PACKAGE = Path(dgl_rs.__file__).resolve().parent
#: open_clip's model attributes (towers, blocks, embeddings): only backbone/ may read them.
OPEN_CLIP_NAMES = {"visual", "transformer", "resblocks", "token_embedding", "positional_embedding", "ln_final",
                   "text_projection", "class_embedding", "conv1", "ln_pre", "ln_post", "proj", "ln_1", "ln_2",
                   "attn", "mlp", "c_fc", "c_proj", "patch_dropout", "ls_1", "ls_2", "attn_pool", "text_pool_type"}


def _own(node: ast.Attribute) -> bool:
    """``self.ln_1``, ``self.mlp.c_fc``: a module's own submodules named like CLIP's."""
    while isinstance(node, ast.Attribute) and node.attr in OPEN_CLIP_NAMES:
        node = node.value
    return isinstance(node, ast.Name) and node.id == "self"


def open_clip_reads(path: Path) -> list[str]:
    where = path.relative_to(PACKAGE) if PACKAGE in path.parents else path.name
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in OPEN_CLIP_NAMES and not _own(node):
            out.append(f"{where}:{node.lineno} {ast.unparse(node)}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] == "open_clip" for n in names) and not getattr(node, "level", 0):
                out.append(f"{where}:{node.lineno} import open_clip")
    return out


def test_only_the_backbone_layer_reads_open_clip():
    found = [r for p in sorted(PACKAGE.rglob("*.py")) if "backbone" not in p.relative_to(PACKAGE).parts
             for r in open_clip_reads(p)]
    assert not found, found


def test_the_scan_sees_what_it_looks_for(tmp_path):
    """The scan is not vacuous: backbone/ reads open_clip, and a method-like file doing so is caught."""
    assert open_clip_reads(PACKAGE / "backbone" / "openclip.py")
    bad = tmp_path / "method.py"
    bad.write_text("import open_clip\n\ndef f(model):\n    return model.clip.visual.transformer.width\n")
    assert len(open_clip_reads(bad)) == 3


def test_nothing_imports_dgl_rs_absolutely():
    hook = Path(__file__).resolve().parents[2] / "shared" / "hooks" / "layering.py"
    if not hook.is_file():
        pytest.skip("the shared layering checker is not beside this checkout")
    out = subprocess.run([sys.executable, str(hook), str(PACKAGE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


#: A legal value other than the default for each option kind (the CLI string and the value).
def _cli_value(opt, default):
    if opt.kind == "bool":
        return ([opt.flag] if not default else ["--no-" + opt.flag[2:]]), not default
    if opt.kind == "choice":
        pick = next(c for c in opt.choices if c != default)
        return [opt.flag, "none" if pick is None else pick], pick
    if opt.kind == "int":
        value = (default or 0) + 1
        return [opt.flag, str(value)], value
    if opt.kind == "float":
        return [opt.flag, "0.5"], 0.5
    if opt.kind == "pair":
        return [opt.flag, "3", "1"], (3, 1)
    return [opt.flag, "0", "2"], [0, 2]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_option_of_every_method_is_settable_from_the_cli(method):
    """Each option a method does not fix has a `dgl-rs train` flag that reaches the
    method's options exactly as given (0 and False included)."""
    spec = METHODS[method]
    for name, opt in settable_options(method).items():
        if name in RECIPE_OPTIONS:
            continue
        default = spec.defaults.get(name, opt.default)
        argv, want = _cli_value(opt, default)
        cfg = parse_args(["--dataset", "synthetic", "--method", method, *argv])
        assert method_options(cfg)[name] == want, (method, name)


@pytest.mark.parametrize("flag, value, option", [("--num-global", "0", 0), ("--num-frame-prompts", "0", 0),
                                                  ("--temporal-embedding", None, True)])
def test_zero_and_false_are_given_values(flag, value, option):
    cfg = parse_args(["--dataset", "synthetic", "--method", "dgl-linear", flag, *([value] if value else []),
                      *(["--pool", "frame_cls_mean"] if flag == "--num-global" else []),
                      *(["--num-text-prompts", "0", "0"] if flag == "--num-frame-prompts" else [])])
    assert method_options(cfg)[flag[2:].replace("-", "_")] == option


def test_methods_options_lists_every_settable_option(capsys):
    from dgl_rs.cli import main

    for method in ("dgl-transformer", "vop-fc", "full-finetune-seqtransf", "zero-shot"):
        assert main(["methods", "--options", method]) == 0
        out = capsys.readouterr().out
        assert all(opt.flag in out for opt in settable_options(method).values()), method
        assert all(f"{k}=" in out for k in METHODS[method].pinned), method


@pytest.mark.parametrize("old", sorted(_compat.MOVED))
def test_old_module_paths_import_with_a_warning_naming_the_new_one(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(_compat.MOVED[old])
    assert any(issubclass(w.category, DeprecationWarning) and _compat.MOVED[old] in str(w.message) for w in caught)


def test_documented_aliases_import_silently():
    sys.modules.pop("dgl_rs.metrics", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import dgl_rs.metrics as m
    assert m.retrieval_report is dgl_rs.ops.metrics.retrieval_report
