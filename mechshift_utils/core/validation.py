"""Parameter checks: bad input stops with one message naming the parameter."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


class ParameterError(ValueError):
    """A parameter has a value the code cannot use. The message names it."""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ParameterError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(f"{name}: expected a positive integer, got {value!r}")
    return value


def check_non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParameterError(f"{name}: expected a non-negative integer, got {value!r}")
    return value


def check_positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ParameterError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{name}: expected True or False, got {value!r}")
    return value


def check_existing_dir(name: str, value: Any) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise ParameterError(f"{name}: expected an existing folder, got {str(value)!r} (not found)")
    return path
