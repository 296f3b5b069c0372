"""Chapter parameters: a frozen dataclass per chapter, filled from the notebook's `parameters` cell.

papermill injects overrides as plain assignments after the cell tagged `parameters` and does not reject names it
does not know. The chapter's second cell therefore rebuilds its parameters from the notebook namespace, so that a
misspelt or invalid parameter stops the run with a message instead of being ignored:

    P = from_namespace(RankRecoveryParams, globals())   # raises on unknown names, wrong types, bad values

Presets: a chapter's dataclass may declare `preset: Literal["full", "quick"] = "full"` and a class attribute
`QUICK = {field: value, ...}`; with `preset = "quick"` those values replace every field still at its default (a
value set by hand wins), so a class can run each chapter in under a minute: `-p preset quick`. A chapter whose
dataclass has a `quick_values` field (the language-model chapters) takes its quick values from it when it is set:
a variant page at a real model's own prompt counts (book/variants.yml, `quick:`) states there what its quick run
uses, since the chapter's QUICK counts are sized for the organisms and would be slower than such a page's defaults.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

# Names that IPython (not the parameters cell) puts in a notebook's namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# IPython's history names (_, __, ___, _i, _ii, _iii, _iN, _N, _ih, _oh, _dh) and Python's dunders (__name__, …).
_HISTORY = re.compile(r"_{1,3}|_i{1,3}|_i\d+|_\d+|_ih|_oh|_dh|_exit_code|__\w+__")


def _is_ipython_value(name: str, value: Any) -> bool:
    """Does `value` look like what IPython itself binds to `name` (so it was not set by a parameter override)?"""
    if name == "In":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if name == "Out":
        return isinstance(value, dict) and all(isinstance(k, int) for k in value)
    return callable(value)  # get_ipython, exit, quit, open: functions or IPython's ExitAutocall


def _is_parameter(name: str, value: Any) -> bool:
    """Is `name = value` in a notebook's namespace a chapter parameter? Raises for a parameter that would be lost:
    an override of an IPython name (`-p exit 5`) or a private name (`-p _seed 5`)."""
    if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
        return False
    if name in _IPYTHON_NAMES:
        if _is_ipython_value(name, value):
            return False
        raise ValueError(
            f"parameter name {name!r} is reserved: IPython binds it in every notebook, so it cannot be "
            f"a chapter parameter (got {name} = {value!r})"
        )
    if name.startswith("_"):
        if _HISTORY.fullmatch(name):
            return False
        raise ValueError(
            f"parameter name {name!r} starts with '_': names starting with '_' are not chapter "
            f"parameters (got {name} = {value!r})"
        )
    return True


def from_namespace(cls: type[T], namespace: dict[str, Any]) -> T:
    """Build the parameter dataclass `cls` from a notebook's namespace; unknown names are an error, and so are
    overrides of IPython's own names (In, Out, exit, quit, open, get_ipython) and private names (_x)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {}
    for k, v in namespace.items():
        try:
            if _is_parameter(k, v):
                given[k] = v
        except ValueError as e:
            raise ValueError(f"{e}; the parameters this chapter takes are {sorted(fields)}") from None
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for this chapter; the parameters it takes are {sorted(fields)}"
        )
    return with_preset(cls(**given))


PRESETS = ("full", "quick")


def with_preset(params: T) -> T:
    """`params` with its class's QUICK values in place of every field still at its default, when preset="quick"."""
    preset = getattr(params, "preset", "full")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if preset == "full":
        return params
    defaults = {f.name: f.default for f in dataclasses.fields(params)}
    own = getattr(params, "quick_values", None)
    if own:  # the run's own quick values (a variant page's): they replace the fields they name
        check_quick_values(own, type(params))
        return dataclasses.replace(params, **{**own, "quick_values": None})
    quick = getattr(type(params), "QUICK", None)
    if not quick:
        raise ValueError(f"{type(params).__name__} has no quick preset")
    unknown = sorted(set(quick) - set(defaults))
    if unknown:
        raise ValueError(f"{type(params).__name__}.QUICK names unknown fields {unknown}")
    changes = {k: v for k, v in quick.items() if getattr(params, k) == defaults[k]}
    return dataclasses.replace(params, **changes)


_NOT_QUICK = ("model", "preset", "quick_values")  # what a quick preset may not change: the model, the preset itself


def check_quick_values(values: Any, cls: type) -> None:
    """`quick_values` must be a {field: value} dict naming fields of `cls` other than model, preset and quick_values
    (ValueError naming the culprits and the fields it may set)."""
    if not isinstance(values, dict):
        raise TypeError(f"quick_values must be a dict {{parameter: value}} or None, got {values!r}")
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_QUICK)
    bad = sorted(set(values) - set(fields))
    if bad:
        raise ValueError(f"quick_values names {bad}, which a quick preset cannot set; it may set any of {fields}")


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
        if (
            isinstance(value, list)
            and typing.get_origin(hints[f.name]) in (tuple, None)
            or (isinstance(value, list) and any(typing.get_origin(h) is tuple for h in typing.get_args(hints[f.name])))
        ):
            object.__setattr__(obj, f.name, _to_tuple(value))


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def require_text(value: Any, name: str, allowed: str) -> None:
    """A non-empty, non-blank string, e.g. require_text(self.model, "model", '"organism" or a hub id / folder').
    Raises TypeError / ValueError naming the parameter and what it takes."""
    if not isinstance(value, str):
        raise TypeError(f"parameter {name}={value!r} must be a string: {allowed}")
    if not value.strip():
        raise ValueError(f"parameter {name} is empty: give {allowed}")


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition: for the value checks in each params class's __post_init__."""
    if not condition:
        raise ValueError(message)
