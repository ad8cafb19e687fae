"""python/dgl_rs/_native.pyi against the compiled module, what `mypy.stubtest
dgl_rs._native` would check, without mypy (not installable offline): the same public
names both ways, and for every function the parameters of the builtin (its pyo3
``__text_signature__``) equal the stub's, in order, with the same defaults. Every
function also binds its stub's parameter names as keywords."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import types
from pathlib import Path

import pytest

from dgl_rs import _native

STUB = Path(_native.__file__).with_name("_native.pyi")

# What every extension module has and no stub declares.
MODULE_DUNDERS = set(dir(types.ModuleType("m"))) | {"__file__", "__all__", "__builtins__", "__cached__", "__path__"}


def _stub() -> dict[str, ast.stmt]:
    """The stub's top-level public declarations by name (imports are not declarations)."""
    tree = ast.parse(STUB.read_text(), filename=str(STUB))
    out: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            out.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
    # Private stub helpers (type aliases such as `_FloatMatrix`) are not in the module.
    return {n: node for n, node in out.items() if not (n.startswith("_") and not n.startswith("__"))}


STUBBED = _stub()
RUNTIME = sorted(set(dir(_native)) - MODULE_DUNDERS)
FUNCTIONS = sorted(n for n in RUNTIME if isinstance(getattr(_native, n), types.BuiltinFunctionType))

class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


_MISSING = _NoDefault()


def _stub_params(node: ast.FunctionDef) -> list[tuple[str, str, object]]:
    """(name, kind, default) of each parameter, as inspect names the kinds."""
    a = node.args
    positional = [(p, "POSITIONAL_ONLY") for p in a.posonlyargs] + [(p, "POSITIONAL_OR_KEYWORD") for p in a.args]
    defaults = [_MISSING] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [(p.arg, kind, d) for (p, kind), d in zip(positional, defaults)]
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", _MISSING))
    out += [(p.arg, "KEYWORD_ONLY", _MISSING if d is None else d) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", _MISSING))
    return [(n, k, _MISSING if d is _MISSING else ast.literal_eval(d)) for n, k, d in out]


def _runtime_params(fn) -> list[tuple[str, str, object]]:
    sig = inspect.signature(fn)
    return [
        (p.name, p.kind.name, _MISSING if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
    ]


def test_the_stub_is_beside_the_compiled_module():
    assert STUB.is_file(), STUB


def test_same_public_names_both_ways():
    assert sorted(STUBBED) == RUNTIME, (
        f"in the module, not the stub: {sorted(set(RUNTIME) - set(STUBBED))}; "
        f"in the stub, not the module: {sorted(set(STUBBED) - set(RUNTIME))}"
    )


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_parameters_match(name):
    fn, node = getattr(_native, name), STUBBED[name]
    assert isinstance(node, ast.FunctionDef), f"{name} is a function, the stub declares {type(node).__name__}"
    assert fn.__text_signature__, f"{name} has no __text_signature__"
    assert _runtime_params(fn) == _stub_params(node)


@pytest.mark.parametrize("name", sorted(n for n in RUNTIME if isinstance(getattr(_native, n), type)))
def test_class_bases_match(name):
    node = STUBBED[name]
    assert isinstance(node, ast.ClassDef), name
    assert [ast.unparse(b) for b in node.bases] == [b.__name__ for b in getattr(_native, name).__bases__]


@pytest.mark.parametrize("name", sorted(n for n, node in STUBBED.items() if isinstance(node, ast.AnnAssign)))
def test_attribute_types_match(name):
    annotation = ast.unparse(STUBBED[name].annotation)
    assert isinstance(getattr(_native, name), getattr(builtins, annotation)), (name, annotation)


BINDING_ERROR = re.compile(r"unexpected keyword argument|missing \d+ required|positional argument|multiple values")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_stub_parameter_names_bind_as_keywords(name):
    """A call by the stub's names binds: what fails is the conversion of the first
    argument (a bare object), never the binding of a name."""
    fn, node = getattr(_native, name), STUBBED[name]
    kwargs = {p: object() for p, kind, _ in _stub_params(node) if kind in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")}
    with pytest.raises(TypeError) as err:
        fn(**kwargs)
    assert not BINDING_ERROR.search(str(err.value)), str(err.value)
