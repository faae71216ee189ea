"""Command-line helpers every script shares: one bool parser, and an argument parser that never echoes
the value of an argument it doesn't know (`--api-key sk-...` must not end up in a terminal log).

    from cli import ArgumentParser, at_least, parse_bool
"""

import argparse

TRUE_WORDS, FALSE_WORDS = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def bool_word(text: str) -> bool | None:
    """True / False for the accepted words (true/yes/1/on, false/no/0/off), None for anything else."""
    word = str(text).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def parse_bool(text: str) -> bool:
    """An argparse type for true/false flags."""
    value = bool_word(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
    return value


def at_least(low: int):
    """An argparse type for whole numbers of at least `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def above_zero(text: str) -> float:
    """An argparse type for numbers above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that unknown arguments are named by their flags only: their values may be secrets."""

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(flags) or f'{len(unknown)} extra value(s)'}")
        return parsed
