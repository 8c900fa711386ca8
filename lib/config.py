"""Experiment configurations: one meaning per configuration.

An experiment's configuration is a frozen dataclass whose fields carry their
defaults, types and (in ``__post_init__``) their domains. The results store
keys a record by the hash of the *normalised* configuration,

    normalise(Config, given) = asdict(Config(**given))   as canonical JSON,

so every default is filled in, unknown keys are rejected with the list of
valid ones, and values are canonicalised (an ``int`` given for a ``float``
field becomes a float, tuples become lists): two spellings of one experiment
map to one record.

An experiment function says which configuration it takes with
:func:`takes`; the store then normalises (and validates) every configuration
before it hashes it or runs anything.

>>> @dataclass(frozen=True)
... class Toy:
...     n: int = 10      # sample size
...     rate: float = 0.5
...     def __post_init__(self):
...         require(self.n >= 1, "n", self.n, "an integer >= 1")
>>> normalise(Toy, {"rate": 1})
{'n': 10, 'rate': 1.0}
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union

F = TypeVar("F", bound=Callable[..., Any])


class ConfigError(ValueError):
    """A configuration names an unknown key or gives a value outside its domain."""


def require(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` "name=value: allowed ..." unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


def integral(value: Any) -> bool:
    """Whether ``value`` is an integer (a Python, NumPy or torch integer scalar), not a bool."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def real(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    try:
        return not isinstance(value, bool) and math.isfinite(float(value)) and not isinstance(value, (str, bytes))
    except (TypeError, ValueError):
        return False


def require_int(name: str, value: Any, low: int = 1, what: str = "") -> None:
    """ConfigError unless ``value`` is an integer >= ``low``; ``what`` says what it counts."""
    require(integral(value) and value >= low, name, value, f"an integer >= {low}" + (f" ({what})" if what else ""))


def require_positive(name: str, value: Any, what: str = "") -> None:
    """ConfigError unless ``value`` is a finite number > 0."""
    require(real(value) and value > 0, name, value, "a positive number" + (f" ({what})" if what else ""))


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {_describe(args[0])}" if args else "a list"
    if hint is type(None):
        return "None"
    names = {float: "a number", int: "an integer", str: "a string", bool: "True or False"}
    return names.get(hint, f"a {getattr(hint, '__name__', str(hint))}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` canonicalised to the field's type ``hint``; ConfigError if it is not of that type."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(name, value, option)
            except ConfigError:
                pass
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(hint) if a is not Ellipsis]
            return [_coerce(f"{name}[{i}]", v, args[0]) if args else v for i, v in enumerate(value)]
    elif hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is Any:
        return value
    elif isinstance(value, hint):
        return value
    raise ConfigError(f"{name}={value!r} is not allowed: {name} must be {_describe(hint)}")


def normalise(config_class: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical, validated, fully spelled-out form of ``given`` as a plain dict.

    Raises :class:`ConfigError` for an unknown key (listing the valid ones with
    their defaults), a value of the wrong type, or a value outside its domain.
    """
    if not isinstance(given, Mapping):
        raise ConfigError(f"a configuration must be a dict, got {type(given).__name__}: {given!r:.80}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        listing = ", ".join(f"{f.name}={_default(f)!r}" for f in fields.values())
        raise ConfigError(f"unknown key(s) {unknown} for {config_class.__name__}; valid keys (with defaults): {listing}")
    hints = typing.get_type_hints(config_class)
    values = {name: _coerce(name, value, hints[name]) for name, value in given.items()}
    missing = [f.name for f in fields.values() if _default(f) == "<required>" and f.name not in values]
    if missing:
        raise ConfigError(f"{config_class.__name__} needs {missing}; valid keys: {', '.join(fields)}")
    instance = config_class(**values)  # __post_init__ checks the domains
    return dataclasses.asdict(instance)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return "<required>"


def takes(config_class: type) -> Callable[[F], F]:
    """Mark an experiment function as taking configurations of ``config_class``.

    The results store then normalises every configuration with
    :func:`normalise` before hashing it or calling the function.
    """

    def mark(fn: F) -> F:
        fn.config_class = config_class  # type: ignore[attr-defined]
        return fn

    return mark


def config_class_of(fn: Callable[..., Any]) -> type | None:
    """The configuration class an experiment function declared with :func:`takes`, or None."""
    return getattr(fn, "config_class", None)


# --- Chapter parameters -----------------------------------------------------------------------
#
# A chapter's ``parameters`` cell declares each parameter's domain in a papermill type comment,
#
#     seeds = None  # type: list[int[0,)]  training seeds; None means the profile default
#     rho = 0.5  # type: float(0,1)  degree law parameter
#     schemes = list(POSITION_SCHEMES)  # type: list[lib.vit.POSITION_SCHEMES]  schemes to compare
#
# in a small grammar without "=" (papermill skips a line with two): ``int``, ``float`` (any
# number), ``str`` or ``bool``; a number type may carry an interval, ``[a,b]``, ``(a,b)``, ``[a,b)``
# or ``(a,b]``, an empty end meaning unbounded (``int[1,)`` is an integer >= 1), or a strict
# bound ``>a`` / ``<b``; ``lib.<module>.<NAME>`` takes one of the keys (or items) of that object of
# lib; ``list[...]`` takes a list of any of those. ``None`` is allowed exactly when the default is
# ``None``. Without a type comment the type is the default's (an ``int`` default takes integers, a
# list of ints takes lists of integers); a default that is an expression then takes anything.

_BASES: dict[str, tuple[tuple[type, ...], str, str]] = {  # accepted types, singular, plural
    "int": ((int,), "an integer", "integers"),
    "float": ((int, float), "a number", "numbers"),
    "str": ((str,), "a string", "strings"),
    "bool": ((bool,), "True or False", "booleans"),
}
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf)"
_BOUND = re.compile(rf"^(?P<op>[<>])(?P<x>{_NUMBER})$")
_INTERVAL = re.compile(rf"^(?P<lo>[\[(])(?P<a>{_NUMBER})?,(?P<b>{_NUMBER})?(?P<hi>[\])])$")
GRAMMAR = ("int, float, str or bool; a number type with an interval (int[1,), float(0,1], float[-1,1]) or a "
           "strict bound (float>0); lib.<module>.<NAME> for one of that object's keys; or list[<any of those>]")


@dataclasses.dataclass(frozen=True)
class ParameterType:
    """A parsed type comment: ``base`` with optional bounds, a choice, or a list of ``item``."""

    text: str
    base: str | None = None  # int, float, str, bool; None for a list or a choice
    item: "ParameterType | None" = None  # the element type of a list
    choices: tuple[Any, ...] | None = None  # the allowed values of a lib.<module>.<NAME> type
    low: float | None = None
    low_closed: bool = True
    high: float | None = None
    high_closed: bool = True

    def describe(self, plural: bool = False) -> str:
        """'an integer >= 1', 'a list of numbers in (0, 1)', "one of 'a', 'b'", ..."""
        if self.item is not None:
            return f"a list of {self.item.describe(plural=True)}"
        if self.choices is not None:
            return ("values from " if plural else "one of ") + ", ".join(map(repr, self.choices)) + f" ({self.text})"
        words = _BASES[self.base or "str"][2 if plural else 1]
        if self.low is not None and self.high is not None:
            return (f"{words} in {'[' if self.low_closed else '('}{_num(self.low)}, "
                    f"{_num(self.high)}{']' if self.high_closed else ')'}")
        if self.low is not None:
            return f"{words} {'>=' if self.low_closed else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{words} {'<=' if self.high_closed else '<'} {_num(self.high)}"
        return words

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this type and lies in its bounds."""
        if self.item is not None:
            return isinstance(value, list) and all(self.item.accepts(v) for v in value)
        if self.choices is not None:
            return isinstance(value, (str, int, float)) and value in self.choices
        kinds = _BASES[self.base or "str"][0]
        if not isinstance(value, kinds) or (isinstance(value, bool) and self.base != "bool"):
            return False
        if self.low is not None and not (value >= self.low if self.low_closed else value > self.low):
            return False
        if self.high is not None and not (value <= self.high if self.high_closed else value < self.high):
            return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else str(x)


def _choices(dotted: str) -> tuple[Any, ...]:
    import importlib

    module_name, _, attribute = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"type {dotted!r} names nothing in lib; use {GRAMMAR}") from None
    return tuple(obj)


def parse_parameter_type(text: str) -> ParameterType:
    """Parse a type comment (see the grammar above); ConfigError naming the grammar if it is not one."""
    spec = text.replace(" ", "")
    if spec.startswith("list[") and spec.endswith("]"):
        return ParameterType(text, item=parse_parameter_type(spec[5:-1]))
    if re.fullmatch(r"lib(\.\w+)+", spec):
        return ParameterType(text, choices=_choices(spec))
    base = next((b for b in _BASES if spec.startswith(b)), None)
    if base is None:
        raise ConfigError(f"type {text!r} is not a parameter type; use {GRAMMAR}")
    rest = spec[len(base):]
    if not rest:
        return ParameterType(text, base=base)
    if base in ("str", "bool"):
        raise ConfigError(f"type {text!r}: only int and float take bounds; use {GRAMMAR}")
    if (m := _BOUND.match(rest)) is not None:
        if m["op"] == ">":
            return ParameterType(text, base=base, low=float(m["x"]), low_closed=False)
        return ParameterType(text, base=base, high=float(m["x"]), high_closed=False)
    if (m := _INTERVAL.match(rest)) is not None:
        low = float(m["a"]) if m["a"] else None
        high = float(m["b"]) if m["b"] else None
        low = None if low == -math.inf else low
        high = None if high == math.inf else high
        return ParameterType(text, base=base, low=low, low_closed=m["lo"] == "[", high=high,
                             high_closed=m["hi"] == "]")
    raise ConfigError(f"type {text!r} is not a parameter type; use {GRAMMAR}")


def type_of_default(default: Any) -> ParameterType | None:
    """The type a parameter without a type comment takes from its default (None: anything goes)."""
    if isinstance(default, bool):
        return ParameterType("bool", base="bool")
    for kind, base in ((int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, kind):
            return ParameterType(base, base=base)
    if isinstance(default, list) and default:
        items = [type_of_default(v) for v in default]
        bases = {t.base for t in items if t is not None}
        if None not in items and all(t.item is None for t in items if t is not None):  # flat lists only
            if len(bases) == 1 or bases == {"int", "float"}:
                base = "float" if "float" in bases else bases.pop()
                return ParameterType(f"list[{base}]", item=ParameterType(base, base=base))
    return None


def check_parameter(name: str, value: Any, default: Any, declared: ParameterType | None) -> None:
    """ConfigError "name=value is not allowed: name must be ..." unless ``value`` fits.

    ``declared`` is the parameter's type comment (parsed), else its type is the default's;
    ``None`` is allowed exactly when the default is ``None``.
    """
    kind = declared or type_of_default(default)
    if value is None:
        if default is None:
            return
        raise ConfigError(f"{name}=None is not allowed: {name} must be {kind.describe() if kind else 'a value'}")
    if kind is None:
        if isinstance(default, list) and not isinstance(value, list):
            raise ConfigError(f"{name}={value!r} is not allowed: {name} must be a list")
        return
    if not kind.accepts(value):
        allowed = kind.describe() + (", or None" if default is None else "")
        raise ConfigError(f"{name}={value!r} is not allowed: {name} must be {allowed}")
