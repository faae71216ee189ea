"""Command-line helpers every script shares: one bool parser, end-of-run tables, and an argument parser that
never echoes the value of an argument it doesn't know (`--api-key sk-...` must not end up in a terminal log).

    from nli_finetune.cli import ArgumentParser, at_least, parse_bool

The true/false words every flag and field accepts are defined here, once (TRUE_WORDS, FALSE_WORDS), from the
yes/no words of an answer, which live with the tasks in prompts.py.
"""

import argparse
import sys
import time

from prompts import NO_WORDS, YES_WORDS

TRUE_WORDS, FALSE_WORDS = YES_WORDS | {"1", "on"}, NO_WORDS | {"0", "off"}  # the words of a true/false flag or field
LOGGED_PROGRESS_SECONDS = 30  # off a terminal (a CI log, `docker logs`): one progress line this often


def on_terminal() -> bool:
    return sys.stderr.isatty()


class LineProgress:
    """tqdm's counting interface for logs: a plain line every LOGGED_PROGRESS_SECONDS and at the end."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it"):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.started = 0, time.monotonic()
        self.last, self.shown, self.closed = self.started, None, False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _show(self) -> None:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total or '?'} {self.unit}{share} in {time.monotonic() - self.started:.0f}s",
              file=sys.stderr, flush=True)
        self.shown = self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= LOGGED_PROGRESS_SECONDS:
            self.last = time.monotonic()
            self._show()

    def close(self) -> None:
        """The final count, unless the last line already gave it; closing twice prints once."""
        if not self.closed and (self.total is None or self.n) and self.shown != self.n:
            self._show()
        self.closed = True


def progress(iterable=None, *, total=None, desc="", unit="it", disable=False):
    """A progress bar on a terminal (tqdm); in a log (CI, `docker logs`) a line every 30 s, never a
    carriage-return update per step."""
    if on_terminal() or disable:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)


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


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table (floats to 3 decimals) for end-of-run summaries and comparisons."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}"
        return "-" if value is None else str(value)
    table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
