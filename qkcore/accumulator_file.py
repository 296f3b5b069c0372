"""One file per ΔC accumulator: its sums and counts, the model's identity and the contrast's definition.

The accumulators are sums, so a run can stop and resume, or run in pieces on several processes, only if what it
saved says which model and which contrast the sums belong to. A file holds a dict written by `torch.save` and read
back with `weights_only=True` (tensors, numbers, strings, lists, dicts: no code runs on load):

    write("dc.pt", "ContrastiveCovariance", acc.state_dict(), model={"name_or_path": ...}, contrast={...})
    found = read("dc.pt", "ContrastiveCovariance", model=expected_model)   # refuses another model's file
    found["state"], found["model"], found["contrast"], found["extra"]

Writes are atomic (a temporary file in the same folder, then `os.replace`), so a run killed while saving leaves
the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "qkcore-accumulator"
VERSION = 1


def _plain(value, name: str):
    """A JSON-like copy of `value` (dicts, lists, str, int, float, bool, None), or a TypeError naming `name`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of plain values (str, int, float, bool, lists, dicts), got {value!r}")
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must hold only plain values (str, int, float, bool, lists, dicts): {e}") from None


def _as_path(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path {path} is a folder: give a file name for the {what} (e.g. {path / 'dc.pt'})")
    return path


def write(
    path, kind: str, state: dict, model: dict | None = None, contrast: dict | None = None, extra: dict | None = None
) -> Path:
    """Save `state` (a state_dict) of an accumulator of `kind` with its model identity, contrast and extra info."""
    path = _as_path(path, kind)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "state": state,
        "model": json.dumps(_plain(model, "model"), sort_keys=True),
        "contrast": json.dumps(_plain(contrast, "contrast"), sort_keys=True),
        "extra": json.dumps(_plain(extra, "extra"), sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _mismatch(found, expected, what: str, path: Path) -> str | None:
    if expected is None or found == expected:
        return None
    keys = sorted({*(found or {}), *(expected or {})})
    diff = [k for k in keys if (found or {}).get(k) != (expected or {}).get(k)]
    shown = ", ".join(f"{k}: file {(found or {}).get(k)!r} vs now {(expected or {}).get(k)!r}" for k in diff[:4])
    return f"{path} was made for another {what} ({shown})"


def read(path, kind: str, model: dict | None = None, contrast: dict | None = None) -> dict:
    """Load a file written by `write`: {"state", "model", "contrast", "extra"}. A file of another format or kind,
    a truncated file, or (when given) another model identity or contrast definition is refused by name."""
    path = _as_path(path, kind)
    if not path.is_file():
        raise FileNotFoundError(f"no accumulator file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled code
        raise ValueError(
            f"{path} ({path.stat().st_size} bytes) is not a readable qkcore accumulator file (truncated or another "
            f"format): {type(e).__name__}: {str(e)[:200]}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a qkcore accumulator file (no format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} has format version {payload.get('version')}, this qkcore reads version {VERSION}")
    if payload.get("kind") != kind:
        raise ValueError(f"{path} holds a {payload.get('kind')}, not a {kind}")
    found = {
        "state": payload["state"],
        "model": json.loads(payload["model"]),
        "contrast": json.loads(payload["contrast"]),
        "extra": json.loads(payload["extra"]),
    }
    for what, expected in (("model", model), ("contrast", contrast)):
        problem = _mismatch(found[what], _plain(expected, what), what, path)
        if problem:
            raise ValueError(problem + f"; refusing to mix sums of different {what}s")
    return found
