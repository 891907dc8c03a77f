"""Small argument checks that name the bad value and the valid choices."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from typing import Any


class EqspikeError(ValueError):
    """Bad input a user can fix: the message names the value and what would be valid."""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    choices = list(choices)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {valid}")
    return value


def _is_real(value: Any) -> bool:
    """A finite int or float (bools, nan and inf are not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_positive(name: str, value: Any) -> float:
    """A finite real number > 0."""
    if not _is_real(value) or not value > 0:
        raise ValueError(f"{name}={value!r} is not valid; it must be a finite number > 0")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """A finite real number >= 0."""
    if not _is_real(value) or not value >= 0:
        raise ValueError(f"{name}={value!r} is not valid; it must be a finite number >= 0")
    return float(value)


def check_int_at_least(name: str, value: Any, minimum: int) -> int:
    """An integer >= ``minimum`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= {minimum}")
    return value


def check_in_interval(name: str, value: Any, low: float, high: float) -> float:
    """A real number in the half-open interval (low, high]."""
    if not _is_real(value) or not low < value <= high:
        raise ValueError(f"{name}={value!r} is not valid; it must lie in ({low}, {high}]")
    return float(value)


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum``, refused at parsing with the bound named."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not valid; it must be an integer >= {minimum}")
        return value

    parse.__name__ = "int"
    return parse


def float_within(low: float, high: float):
    """An argparse ``type``: a finite number in [low, high], refused at parsing with the interval named."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not valid; it must lie in [{low}, {high}]")
        return value

    parse.__name__ = "float"
    return parse
