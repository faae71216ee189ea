"""Command-line helpers every script shares: one bool parser, and an argument parser that never echoes
the value of an argument it doesn't know (`--api-key sk-...` must not end up in a terminal log).

    from cli import ArgumentParser, parse_bool
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that unknown arguments are named by their flags only: their values may be secrets."""

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(flags) or f'{len(unknown)} extra value(s)'}")
        return parsed
