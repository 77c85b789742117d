"""Argument parsing pieces: a parser whose mistakes are one-line errors, value types that name what they
expect, and library constants read only when needed (so building the parser imports no torch)."""
import argparse
import importlib
from collections.abc import Sequence

from ..core.rules import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT


class UsageError(Exception):
    """A mistake of the user's: reported as ``chita-nn: error: <message>`` with exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def _typed(convert, rule):
    """An argparse ``type``: ``convert`` the text, then check it against ``rule``."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = text
        if not rule.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}")
        return value

    parse.__name__ = rule.describe()
    return parse


positive_int = _typed(int, POSITIVE_INT)
count = _typed(int, COUNT)
fraction = _typed(float, FRACTION)
non_negative = _typed(float, NON_NEGATIVE)
positive = _typed(float, POSITIVE)


class LibraryConstant(Sequence):
    """``module.NAME`` (or ``module.NAME[key]``, or the attribute ``key`` of a class: a recipe's default),
    imported on first use.

    As ``choices=`` it is imported when a value is checked; as an action's ``library_default`` it is shown by
    ``%(library_default)s`` in help text, imported only when that help is printed.
    """

    def __init__(self, module, name, key=None):
        self.module, self.name, self.key = module, name, key

    def value(self):
        value = getattr(importlib.import_module(self.module), self.name)
        if self.key is None:
            return value
        return value[self.key] if isinstance(value, dict) else getattr(value, self.key)

    def __getitem__(self, index):
        return self.value()[index]

    def __len__(self):
        return len(self.value())

    def __contains__(self, item):
        return item in self.value()

    def __iter__(self):
        return iter(self.value())

    def __str__(self):
        return str(self.value())


def library_default(action, module, name, key):
    """Let ``action``'s help say ``%(library_default)s`` for ``module.NAME[key]`` (or ``module.NAME.key``);
    returns the action."""
    action.library_default = LibraryConstant(module, name, key)
    return action
