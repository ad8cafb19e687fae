"""A method's options, declared once: type, bounds, default and help.

Every method class lists its own :class:`Option` s in ``OPTIONS``; a class has those of its
bases too (:func:`class_options`, a subclass may redeclare one by name to change its
choices or default). From the declarations come the constructor's checks (a TypeError or
ValueError naming the option), the saved file's ``config``, ``build_method``'s accepted
keywords, the flags of ``dgl-rs train`` (:func:`add_option_flags`) and
``dgl-rs methods --options NAME``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

#: Option kinds: an int (``low`` the smallest legal value), a float (> ``low``), a bool,
#: one of ``choices``, a pair of ints >= 0, or visual block indices (a list, a word
#: among ``choices``, or None).
KINDS = ("int", "float", "bool", "choice", "pair", "layers")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: Any
    help: str
    low: Optional[float] = None
    choices: Tuple = ()
    nullable: bool = False  # None is a legal value (it means what ``help`` says)
    attr: Optional[str] = None  # the model attribute holding it (default: ``name``)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def attribute(self) -> str:
        return self.attr or self.name

    # ---- checks
    def check(self, value: Any) -> Any:
        """``value`` normalised (a pair as a tuple, layers as a sorted list), or a
        TypeError / ValueError naming the option, what it expects and what it got."""
        if value is None and self.nullable:
            return None
        return getattr(self, f"_check_{self.kind}")(value)

    def _check_int(self, value: Any, name: Optional[str] = None) -> int:
        name = name or self.name
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"`{name}` must be >= {self.low}, got {value}")
        return int(value)

    def _check_float(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"`{self.name}` must be a number, got {value!r}")
        if not self.low < value < float("inf"):
            raise ValueError(f"`{self.name}` must be > {self.low} and finite, got {value!r}")
        return float(value)

    def _check_bool(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"`{self.name}` must be a bool, got {value!r}")
        return value

    def _check_choice(self, value: Any) -> Any:
        if value not in self.choices:
            raise ValueError(f"`{self.name}` must be one of {tuple(self.choices)}, got {value!r}")
        return value

    def _check_pair(self, value: Any) -> Tuple[int, int]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise TypeError(f"`{self.name}` must be a pair (n_pre, n_post), got {value!r}")
        return tuple(self._check_int(v, f"{self.name}[{i}]") for i, v in enumerate(value))

    def _check_layers(self, value: Any):
        if isinstance(value, str):
            return self._check_choice(value)
        if not isinstance(value, (Sequence, range)):
            raise TypeError(f"`{self.name}` must be block indices, one of {self.choices} or None, got {value!r}")
        return sorted({self._check_int(v, f"{self.name}[]") for v in value})

    # ---- files and flags
    def to_json(self, value: Any) -> Any:
        return list(value) if isinstance(value, (tuple, range)) else value

    def add_flag(self, parser: argparse.ArgumentParser, methods: Sequence[str] = ()) -> None:
        """This option as a ``dgl-rs train`` flag whose default is None: the method's own."""
        where = f" [{', '.join(methods)}]" if methods else ""
        default = "" if "(default" in self.help else " (default: the method's)"
        kw: Dict[str, Any] = dict(dest=self.name, default=None, help=f"{self.help}{default}{where}")
        if self.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif self.kind == "int":
            kw.update(type=int, metavar="N")
        elif self.kind == "float":
            kw.update(type=float, metavar="X")
        elif self.kind == "choice":
            kw.update(choices=[_show(c) for c in self.choices])
        elif self.kind == "pair":
            kw.update(type=int, nargs=2, metavar=("N_PRE", "N_POST"))
        else:
            kw.update(type=_layer, nargs="+", metavar="I")
        parser.add_argument(self.flag, **kw)

    def from_flag(self, value: Any) -> Any:
        """A parsed flag value as the option takes it (``layers``: one word alone)."""
        if self.kind == "pair":
            return tuple(value)
        if self.kind == "choice":
            return None if value == "none" and None in self.choices else value
        if self.kind == "layers" and isinstance(value, str):
            return value
        if self.kind == "layers" and len(value) == 1 and isinstance(value[0], str):
            return None if value[0] == "none" else value[0]
        if self.kind == "layers" and any(isinstance(v, str) for v in value):
            raise ValueError(f"{self.flag} takes block indices, or one of {self.choices + ('none',)} alone")
        return value


def _show(choice: Any) -> str:
    return "none" if choice is None else str(choice)


def _layer(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def class_options(cls) -> Dict[str, Option]:
    """Every option of a method class, bases first; a subclass's declaration of a name wins."""
    out: Dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        for opt in vars(klass).get("OPTIONS", ()):
            out[opt.name] = opt
    return out


def add_option_flags(parser: argparse.ArgumentParser, settable: Dict[str, Dict[str, Option]],
                     skip: Sequence[str] = ()) -> Dict[str, Option]:
    """One flag per option that any method lets a user set (``settable``: method name ->
    its options not pinned by the method), its help naming the methods that take it;
    ``skip``: options that already have a flag. Returns the options flagged."""
    users: Dict[str, list] = {}
    found: Dict[str, Option] = {}
    for method, options in settable.items():
        for name, opt in options.items():
            if name not in skip:
                found.setdefault(name, opt)
                users.setdefault(name, []).append(method)
    for name, opt in found.items():
        opt.add_flag(parser, () if len(users[name]) == len(settable) else users[name])
    return found
