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
