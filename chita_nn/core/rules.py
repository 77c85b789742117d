"""Rules for setting values (type, range, finiteness, choices), shared by the Python API and recipe schemas.

A :class:`Rule` checks one value and says what it expected, so every caller reports mistakes the same way:
``"<name> must be <what>, got <value>"``.
"""
import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """What a value may be: ``kind`` is ``"int"``, ``"float"`` (ints accepted), ``"bool"``, ``"str"``,
    ``"choice"`` (one of ``choices``), ``"strings"`` / ``"numbers"`` (a list of them) or ``"table"`` (a dict);
    numbers lie in ``[low, high]``
    (an end is excluded when ``open_low`` / ``open_high``) and must be finite."""

    kind: str
    low: float = None
    high: float = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()

    def describe(self):
        """The expectation in words, e.g. ``"a number in (0, 1)"``."""
        if self.kind == "choice":
            return f"one of {', '.join(map(repr, self.choices))}"
        noun = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
                "strings": "a list of strings", "numbers": "a list of finite numbers", "table": "a table"}[self.kind]
        if self.low is not None and self.high is not None:
            return (f"{noun} in {'(' if self.open_low else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.open_high else ']'}")
        if self.low is not None:
            return f"{noun} {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.open_high else '<='} {self.high:g}"
        return noun

    def accepts(self, value):
        """Whether ``value`` satisfies the rule."""
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "str":
            return isinstance(value, str) and value != ""
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "strings":
            return isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
        if self.kind == "numbers":
            return isinstance(value, (list, tuple)) and all(Rule("float").accepts(v) for v in value)
        if self.kind == "table":
            return isinstance(value, dict)
        number = numbers.Integral if self.kind == "int" else numbers.Real
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            return False
        return self._in_range(value)

    def _in_range(self, value):
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.open_high and value == self.high))

    def check(self, name, value):
        """Return ``value``, or raise ``ValueError("<name> must be <what>, got <value>")``."""
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return value


@dataclass(frozen=True)
class OneOf:
    """A value accepted by any of ``rules`` (same interface as :class:`Rule`)."""

    rules: tuple

    def describe(self):
        return " or ".join(rule.describe() for rule in self.rules)

    def accepts(self, value):
        return any(rule.accepts(value) for rule in self.rules)

    check = Rule.check


POSITIVE_INT = Rule("int", low=1)
COUNT = Rule("int", low=0)
FRACTION = Rule("float", low=0.0, high=1.0, open_high=True)
NON_NEGATIVE = Rule("float", low=0.0)
POSITIVE = Rule("float", low=0.0, open_low=True)
