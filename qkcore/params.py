"""Chapter parameters: a frozen dataclass per chapter, filled from the notebook's `parameters` cell.

papermill injects overrides as plain assignments after the cell tagged `parameters` and does not reject names it
does not know. The chapter's second cell therefore rebuilds its parameters from the notebook namespace, so that a
misspelt or invalid parameter stops the run with a message instead of being ignored:

    P = from_namespace(RankRecoveryParams, globals())   # raises on unknown names, wrong types, bad values
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

# Names that IPython (not the parameters cell) puts in a notebook's namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _is_parameter(name: str, value: Any) -> bool:
    if name.startswith("_") or name in _IPYTHON_NAMES:
        return False
    return not isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))


def from_namespace(cls: type[T], namespace: dict[str, Any]) -> T:
    """Build the parameter dataclass `cls` from a notebook's namespace; unknown names are an error."""
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in namespace.items() if _is_parameter(k, v)}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for this chapter; the parameters it takes are {sorted(fields)}"
        )
    return cls(**given)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(hint)
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, h) for v, h in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(obj: Any) -> None:
    """Raise TypeError naming the field when a dataclass field's value does not match its annotation.
    Lists given for tuple fields (papermill's YAML gives lists) are converted to tuples, recursively."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise TypeError(f"parameter {f.name}={value!r} should be of type {hints[f.name]}")
        if isinstance(value, list) and typing.get_origin(hints[f.name]) in (tuple, None) or (
            isinstance(value, list) and any(typing.get_origin(h) is tuple for h in typing.get_args(hints[f.name]))
        ):
            object.__setattr__(obj, f.name, _to_tuple(value))


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition: for the value checks in each params class's __post_init__."""
    if not condition:
        raise ValueError(message)
