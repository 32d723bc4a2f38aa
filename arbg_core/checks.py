"""Range checks of settings, declared once and used by the API and the CLI alike.

A config dataclass checks its numbers in `__post_init__` with `check(self, name=Range(...))`: a
value of the wrong type, not finite or out of range raises `SettingError` (a ValueError) naming
the field and the range. `flags.add_config_flags` builds the same dataclass for every flag it
parses, so `arbg` refuses a bad number at parse time with the dataclass's own words, and code
that builds a config directly is refused the same way. Standard library only: `train.py` imports
this on a GPU machine that has torch but not OpenMM or mdtraj.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, Iterable


class SettingError(ValueError):
    """A setting out of range. `joint`: the value is fine alone, not with the others."""

    def __init__(self, name: str, problem: str, joint: bool = False):
        super().__init__(f"{name} {problem}")
        self.name, self.problem, self.joint = name, problem, joint


@dataclass(frozen=True)
class Range:
    """Integers or finite numbers between lo and hi (None: unbounded); `optional` admits None."""

    kind: type = float  # int or float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False  # hi itself excluded
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        if self.kind is int and self.lo == 1 and self.hi is None:
            return "a positive integer"
        lo, hi = (None if v is None else f"{v:g}" if self.kind is float else str(int(v))
                  for v in (self.lo, self.hi))
        if lo is not None and hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what} in {left}{lo}, {hi}{right}"
        if lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {lo}"
        if hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {hi}"
        return what

    def problem(self, value: Any) -> str | None:
        """None if `value` is admitted, else what is wrong with it."""
        if value is None and self.optional:
            return None
        ok = isinstance(value, numbers.Integral if self.kind is int else numbers.Real)
        ok = ok and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (self.lo is None or (value > self.lo if self.lo_open else value >= self.lo))
        ok = ok and (self.hi is None or (value < self.hi if self.hi_open else value <= self.hi))
        return None if ok else f"must be {self.describe()}, got {value!r}"

    def parse(self, text: str):
        """An argparse `type=`: the text as a number in range (for flags without a dataclass)."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value


def optional(rule: Range) -> Range:
    """The same range, or None."""
    return replace(rule, optional=True)


POSITIVE_INT = Range(int, 1)
COUNT = Range(int, 0)  # zero or more
POSITIVE = Range(float, 0, lo_open=True)
NON_NEGATIVE = Range(float, 0)
FRACTION = Range(float, 0, 1)
SEED = Range(int, 0, 2**31 - 1)  # what OpenMM, torch and numpy all take (and the app's widget)
TAU = Range(float, 0.05, 5.0)  # sampling temperature: the app's widget range
TEMPERATURE_K = Range(float, 0, 5000, lo_open=True)


def check(obj: Any, **rules: Range) -> None:
    """Raise SettingError for the first attribute of `obj` that breaks its rule."""
    for name, rule in rules.items():
        problem = rule.problem(getattr(obj, name))
        if problem:
            raise SettingError(name, problem)


def one_of(obj: Any, name: str, choices: Iterable[str]) -> None:
    """Raise SettingError unless attribute `name` of `obj` is one of `choices`."""
    choices = tuple(choices)
    if getattr(obj, name) not in choices:
        raise SettingError(name, f"must be one of {', '.join(choices)}, got {getattr(obj, name)!r}")
