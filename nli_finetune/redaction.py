"""The project's one redaction policy: what counts as a secret, and how it is kept out of every file,
log line, printed message and W&B run (training, the API client and job runner, serving, the study, the
report all call this module; nothing else decides what a secret is).

    from nli_finetune.redaction import redact, redact_data, safe_url
    print(redact(message))                        # text: *** in place of every secret
    atomic_write_json(path, redact_data(record))  # nested dicts / lists / strings

What is hidden:
- the value (8 characters or more) of every environment variable whose name contains KEY, TOKEN,
  SECRET, PASSWORD, PASSWD, PASSPHRASE or CREDENTIAL (`DB_PASSWD`, `SERVICE_KEY_ID`, `HF_TOKEN`, ...),
  plus any `extra` value the caller holds (the API key in use, even a short one);
- any echoed run of FRAGMENT or more characters of such a value (servers echo truncated keys); values
  that are paths are hidden whole only, so that their folders' names stay readable elsewhere;
- the `user:password@` part of a URL, a secret-looking URL query parameter's value (`?api_key=...`,
  `&token=`, `key=`, `sig=`, ...) and an `Authorization: Bearer ...` token.
"""

import logging
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nli_finetune.data_io import atomic_write_text

MASK = "***"
MIN_SECRET = 8  # shorter values ("false" of TOKENIZERS_PARALLELISM, "1") are settings, not credentials
FRAGMENT = 8  # an echoed run of this many characters of a secret is redacted too
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL", re.IGNORECASE)
SECRET_PARAMETER = re.compile(r"key|token|secret|passw|sig|auth|credential", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#'\"<>]+@")
QUERY_PARAMETER = re.compile(r"(?P<name>[?&;][^=&;#\s'\"<>]+=)(?P<value>[^&;#\s'\"<>]*)")
BEARER = re.compile(r"(?P<word>\bBearer\s+)[^\s'\"<>,]+", re.IGNORECASE)


def secret_values(extra=(), environ=None) -> list[str]:
    """The credentials to keep out of every message and file: every credential-named environment variable
    of MIN_SECRET or more characters and the `extra` values of 4 or more (longest first, so a key is
    replaced before any part of it)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v.strip()) >= MIN_SECRET}
    values |= {v for v in extra if v and len(v) >= 4}
    return sorted(values, key=len, reverse=True)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith("~")


def _hide_values(text: str, secrets: list[str]) -> str:
    """Whole values, then echoed fragments of the values that are not paths, as ***."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    grams = {s[i:i + FRAGMENT] for s in secrets if not _looks_like_path(s) for i in range(len(s) - FRAGMENT + 1)}
    hidden = []  # (start, end) of every fragment found; str.find keeps a long log fast
    for gram in grams:
        start = text.find(gram)
        while start != -1:
            hidden.append((start, start + FRAGMENT))
            start = text.find(gram, start + 1)
    if not hidden:
        return text
    parts, kept_from = [], 0
    for start, end in sorted(hidden):
        if start > kept_from:
            parts += [text[kept_from:start], MASK]
        elif not parts:
            parts.append(MASK)
        kept_from = max(kept_from, end)
    return "".join(parts) + text[kept_from:]


def _hide_url_secrets(text: str) -> str:
    """URL credentials, secret-looking query parameters' values and bearer tokens, as ***."""
    text = URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = QUERY_PARAMETER.sub(
        lambda m: m["name"] + (MASK if SECRET_PARAMETER.search(m["name"]) and m["value"] else m["value"]), text)
    return BEARER.sub(lambda m: m["word"] + MASK, text)


def redact(text, extra=(), secrets: list[str] | None = None) -> str:
    """`text` (or an exception: its message) with every secret (see the module docstring) as ***. `extra`:
    values the caller holds (the API key in use); `secrets`: a precomputed `secret_values()`."""
    secrets = secret_values(extra) if secrets is None else secrets
    return _hide_url_secrets(_hide_values(str(text), secrets))


def redact_data(obj, extra=()):
    """A copy of `obj` (nested dicts, lists, tuples and strings; keys too) with every string redacted;
    numbers, booleans and None unchanged. Tuples become lists (what JSON writes anyway)."""
    secrets = secret_values(extra)

    def walk(value):
        if isinstance(value, str):
            return redact(value, secrets=secrets)
        if isinstance(value, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        return value

    return walk(obj)


def safe_url(url: str) -> str:
    """The URL to save or print: no user:password@, no secret-looking query parameter, no credential."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not SECRET_PARAMETER.search(k)]
    return redact(urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), "")))


def redact_file(path) -> None:
    """Rewrite the text file `path` redacted (atomically), when it holds a secret: for what a child process
    wrote there directly (a study stage's own output lines)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    clean = redact(text)
    if clean != text:
        atomic_write_text(path, clean)


class RedactingFilter(logging.Filter):
    """Redacts every record a handler emits (its message with its arguments filled in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logging() -> None:
    """Make every handler of every logger so far redact what it writes (call after logging.basicConfig);
    libraries such as transformers log through handlers of their own, not the root's."""
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for handler in {h for lg in loggers for h in lg.handlers}:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
