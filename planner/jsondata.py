"""JSON as the state store writes it: compact, standard (no NaN), and a value's text safe to
store, whatever a plan's Python code hands planctl."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["UnstorableError", "dumps", "dumps_lossy", "text"]


class UnstorableError(ValueError):
    """A value has no JSON form: a key that is not a string, NaN, a circular reference..."""


def text(value: object) -> str:
    """``str(value)`` that never raises and holds no lone surrogate (``os.fsdecode`` of a
    byte that is not UTF-8 makes one; SQLite and UTF-8 files refuse it): each is written
    as a backslash escape."""
    try:
        said = value if type(value) is str else str(value)
    except Exception as exc:  # noqa: BLE001 - a broken __str__ says so instead
        return f"<{type(value).__name__} whose str() raised {type(exc).__name__}>"
    try:
        said.encode("utf-8")
    except UnicodeEncodeError:
        return said.encode("utf-8", "backslashreplace").decode("utf-8")
    return said


def _default(value: object) -> str:
    """Any other object is stored as its text, as ``default=str`` would."""
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - reported as the value's problem
        raise UnstorableError(f"str() of a {type(value).__name__} raised "
                              f"{type(exc).__name__}: {text(exc)}") from None


# The C encoder of ``json``, made once: ``json.dumps`` builds a new one on every call, which
# costs more than encoding the small values a run stores. No check for circular
# references: one raises RecursionError, reported like a value nested too deeply.
_iterencode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False,
) if json.encoder.c_make_encoder is not None else None  # type: ignore[attr-defined]
_slow_encode = json.JSONEncoder(separators=(",", ":"), default=_default,
                                check_circular=False, allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact standard JSON, as ``json.dumps(value, separators=(",", ":"), default=str,
    allow_nan=False)``; raises ``UnstorableError`` saying why a value has none."""
    try:
        if _iterencode is None:
            return _slow_encode(value)
        return "".join(_iterencode(value, 0))
    except UnstorableError:
        raise
    except RecursionError:
        raise UnstorableError("it contains itself, or is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise UnstorableError(text(exc)) from None


def dumps_lossy(value: Any) -> str:
    """``dumps``, or when that fails, the JSON of a copy of ``value`` with what has no JSON
    form replaced: NaN and infinities by null, other keys, huge ints and objects by their
    text, a circular or too deep part by a note. The state store's last line of defence:
    a value it cannot write must not end the run."""
    try:
        return dumps(value)
    except UnstorableError:
        return dumps(_repaired(value, 0, set()))


_DEPTH = 100  # deeper than any result worth keeping, well within the recursion limit


def _repaired(value: Any, depth: int, inside: set[int]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        try:
            int.__repr__(value)
        except ValueError:
            return f"<int of {value.bit_length()} bits>"
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)):
        if id(value) in inside:
            return "<circular reference>"
        if depth >= _DEPTH:
            return "<nested too deeply>"
        inside.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): _repaired(v, depth + 1, inside) for k, v in value.items()}
            return [_repaired(v, depth + 1, inside) for v in value]
        finally:
            inside.discard(id(value))
    try:
        return _default(value)
    except UnstorableError:
        return text(value)


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    repaired = _repaired(key, 0, set())
    return repaired if isinstance(repaired, str) else json.dumps(repaired)
