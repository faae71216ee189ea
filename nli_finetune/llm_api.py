"""One client for any OpenAI-compatible chat-completions API: providers, keys, retries, answer checks.

Providers (`--api`): mistral, openai, deepseek, local (vLLM, Ollama, llama.cpp servers); `--api-base`
and `--model-name` override the defaults. Keys come from the environment or `.env` and are never
printed, logged or written: every error message goes through the project's one redaction
(nli_finetune/redaction.py: the key, every credential in the environment, any 8-character fragment of one,
as servers echo a truncated key, URL credentials), and a URL is saved without its user:password part or
secret-looking query parameters (`safe_url`).

One rule classifies failures (`ApiError.kind`): 429, 408, 409, 425, 5xx, timeouts, connection errors and
malformed bodies are retried with exponential backoff and jitter, honouring Retry-After (clamped to
[0, backoff_cap]), at most `max_attempts` times, then "exhausted"; 400, 413, 422 refuse this one prompt
("refused"); any other status (401, 403, 404, ...) ends the run ("fatal"). `--timeout` bounds a whole
request, and an answer over MAX_ANSWER_BYTES is refused. Setting `client.stop` (Ctrl-C, a fatal error
elsewhere) makes every worker stop before its next wait or attempt (`Stopped`).
The job runner that uses it: job_runner.py.
"""

import argparse
import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from nli_finetune.cli import above_zero, at_least
from nli_finetune.data_io import DataError, load_env_file
from nli_finetune.extraction import iter_json_objects
from nli_finetune.redaction import redact, safe_url
from prompts import REASK_TEMPLATE, Task

PROVIDERS = {
    "mistral": {"base": "https://api.mistral.ai/v1", "key_env": "MISTRAL_API_KEY", "model": "open-mistral-7b"},
    "openai": {"base": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY", "model": "gpt-4o-mini"},
    "deepseek": {"base": "https://api.deepseek.com/v1", "key_env": "DEEPSEEK_API_KEY", "model": "deepseek-chat"},
    "local": {"base": "http://127.0.0.1:8000/v1", "key_env": "API_KEY", "model": "local-model"},
}
KEY_VARIABLES = sorted({p["key_env"] for p in PROVIDERS.values()} | {"SERVE_API_KEY"})
RETRYABLE_STATUS = {408, 409, 425, 429}  # and every 5xx
REFUSED_STATUS = {400, 413, 422}  # this prompt only (too long for the context, invalid for this model)
MAX_ANSWER_BYTES = 4 * 2**20  # a chat answer is kilobytes; a bigger body is refused, not stored
MAX_TIMEOUT = 24 * 3600.0


class ApiError(RuntimeError):
    """A request that failed for good. `kind`: "refused" (this prompt: 400/413/422, an oversized answer),
    "exhausted" (retries ran out) or "fatal" (401/403/404 and the like: every prompt would fail)."""

    def __init__(self, message: str, status: int | None = None, kind: str = "fatal"):
        super().__init__(message)
        self.status, self.kind = status, kind


class Stopped(Exception):
    """The run is stopping (Ctrl-C, a fatal error, a failed save): no further attempt or wait."""


class ValidationError(ValueError):
    """An answer that does not fit the task's schema; the message is sent back to the model."""


def required_text(answer: dict, name: str) -> str:
    """answer[name] as written, or ValidationError when it is not a non-empty string."""
    value = answer.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"'{name}' must be a non-empty string")
    return value


def required_label(answer: dict, task: Task, name: str | None = None):
    """The task's label in answer[name] (default: the task's label field), or ValidationError."""
    name = name or task.label_field
    label = task.normalize_label(answer.get(name))
    if label is None:
        raise ValidationError(f"'{name}' must be {' or '.join(map(str, task.labels))}, got {answer.get(name)!r}")
    return label


def timeout_seconds(text: str) -> float:
    """An argparse type: seconds above 0 and at most a day (1e999 is not a timeout)."""
    value = above_zero(text)
    if not value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIMEOUT:.0f} seconds, got {text}")
    return value


def add_api_arguments(parser, default_api="mistral") -> None:
    """The flags every API script takes."""
    parser.add_argument("--api", choices=sorted(PROVIDERS), default=default_api)
    parser.add_argument("--api-base", default=None, help="override the provider's base URL")
    parser.add_argument("--model-name", default=None, help="override the provider's default model")
    parser.add_argument("--workers", type=at_least(1), default=4, help="concurrent requests")
    parser.add_argument("--requests-per-minute", type=above_zero, default=None, help="stay under a quota")
    parser.add_argument("--max-attempts", type=at_least(1), default=6, help="HTTP attempts per request (429/5xx/timeouts)")
    parser.add_argument("--max-retries", type=at_least(0), default=2, help="re-asks after an invalid answer")
    parser.add_argument("--timeout", type=timeout_seconds, default=60.0, help="seconds per HTTP request (all of it)")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry ids in the failures file")
    parser.add_argument("--price-in", type=float, default=None, help="price per million prompt tokens")
    parser.add_argument("--price-out", type=float, default=None, help="price per million completion tokens")
    parser.add_argument("--no-json-mode", action="store_true", help="do not request JSON output mode")


def client_from_args(args) -> "ChatClient":
    """A client for --api/--api-base/--model-name; a missing key or a bad setting is a DataError here,
    before any work."""
    load_env_file()
    provider = PROVIDERS[args.api]
    key = os.environ.get(provider["key_env"], "")
    if args.api == "local":  # the server scripts/serve.py runs checks SERVE_API_KEY
        key = key or os.environ.get("SERVE_API_KEY", "")
    if not key and args.api != "local":
        raise DataError(f"no API key: set {provider['key_env']} in the environment or in .env "
                        f"(--api {args.api})")
    base = urlsplit(args.api_base or provider["base"])
    if base.scheme not in ("http", "https") or not base.hostname:
        raise DataError(f"--api-base {safe_url(args.api_base)}: expected a URL such as http://127.0.0.1:8000/v1")
    if not 0 < args.timeout <= MAX_TIMEOUT:
        raise DataError(f"--timeout must be above 0 and at most {MAX_TIMEOUT:.0f} seconds, got {args.timeout}")
    return ChatClient(base_url=args.api_base or provider["base"], api_key=key or "EMPTY",
                      model=args.model_name or provider["model"], timeout=args.timeout,
                      max_attempts=args.max_attempts, requests_per_minute=args.requests_per_minute,
                      json_mode=not args.no_json_mode, pool_size=max(args.workers, 1))


def _read_within(raw, deadline: float) -> bytes:
    """The decoded body of a streamed urllib3 response, each socket read bounded by what is left until
    `deadline` (requests' own timeout bounds each read, so a dripping server could hold a worker for ever)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    chunks, size = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise requests.Timeout("the whole request took longer than --timeout")
        if sock is not None:
            sock.settimeout(remaining)
        try:
            chunk = raw.read1(65536, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError:
            raise requests.Timeout("the whole request took longer than --timeout") from None
        except urllib3.exceptions.HTTPError as exc:
            raise requests.ConnectionError(type(exc).__name__) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ApiError(f"answer over {MAX_ANSWER_BYTES} bytes refused", kind="refused")
        chunks.append(chunk)


class MalformedBody(ValueError):
    """A 200 whose body is not a chat completion this client can read (retried like a 5xx)."""


def message_text(content) -> str:
    """The answer text of `message.content`: a string, None, or a list of text parts (joined)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = [part if isinstance(part, str) else part.get("text") if isinstance(part, dict) else None
                 for part in content]
        if all(isinstance(text, str) for text in texts):
            return "".join(texts)
        raise MalformedBody("message content holds parts other than text")
    raise MalformedBody(f"message content is a {type(content).__name__}")


def checked_usage(usage) -> dict:
    """Token counts as non-negative ints (absent ones 0); any other shape is a malformed body."""
    if usage is None:
        return {}
    if not isinstance(usage, dict):
        raise MalformedBody(f"usage is a {type(usage).__name__}")
    checked = {}
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise MalformedBody(f"usage.{name} is {value!r}")
        checked[name] = int(value)
    return checked


def checked_completion(data) -> dict:
    """The response with choices[0].message.content as text and usage as ints, or MalformedBody."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise MalformedBody("no choices[0].message") from None
    if not isinstance(choice, dict) or not isinstance(message, dict):
        raise MalformedBody("choices[0].message is not an object")
    fingerprint = data.get("system_fingerprint")
    return {**data, "choices": [{**choice, "message": {**message, "content": message_text(message.get("content"))}}],
            "usage": checked_usage(data.get("usage")),
            "system_fingerprint": fingerprint if isinstance(fingerprint, str) else ""}


def chat_url(base_url: str) -> str:
    """`<base>/chat/completions`, keeping a query string where it belongs (after the path)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))


@dataclass
class ChatClient:
    base_url: str
    api_key: str
    model: str
    timeout: float = 60.0
    max_attempts: int = 6
    requests_per_minute: float | None = None
    json_mode: bool = True
    pool_size: int = 4
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    temperature: float = 0.0
    extra_body: dict = field(default_factory=dict)  # more request fields, e.g. max_tokens
    stop: threading.Event = field(default_factory=threading.Event)  # set: no further attempt or wait
    _session: requests.Session = field(init=False, repr=False)
    _rate_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _next_slot: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self):
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def _redact(self, text: str) -> str:
        return redact(text, [self.api_key] if self.api_key != "EMPTY" else [])

    def _pause(self, seconds: float) -> None:
        """Sleep, unless the run is stopping (then at once Stopped)."""
        if self.stop.wait(max(0.0, seconds)) or self.stop.is_set():
            raise Stopped()

    def _wait_for_rate_slot(self) -> None:
        if not self.requests_per_minute:
            return
        interval = 60.0 / self.requests_per_minute
        with self._rate_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + interval
        self._pause(slot - now)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """The wait before the next attempt: Retry-After in seconds when it is a finite number (clamped to
        [0, backoff_cap]; an HTTP date or NaN is ignored), else exponential with jitter."""
        try:
            seconds = float(retry_after) if retry_after else math.nan
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return min(max(seconds, 0.0), self.backoff_cap)
        delay = min(self.backoff_base * 2 ** attempt, self.backoff_cap)
        return delay * (0.5 + random.random() / 2)  # jitter: spread retries of many workers

    def chat(self, messages: list[dict]) -> tuple[str, dict]:
        """(answer text, usage) for one chat request, retrying what is worth retrying."""
        data = self.completion(messages)
        return data["choices"][0]["message"]["content"], data["usage"]

    def _post(self, body: dict, headers: dict) -> tuple[int, bytes, dict]:
        """(status, body, headers) of one POST, all of it within `timeout` (a server that drips its answer is
        cut at the deadline); a body over MAX_ANSWER_BYTES is refused."""
        deadline = time.monotonic() + self.timeout
        response = self._session.post(chat_url(self.base_url), json=body, headers=headers, stream=True,
                                      timeout=self.timeout)
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
                raise ApiError(f"answer of {int(declared)} bytes refused (over {MAX_ANSWER_BYTES})", kind="refused")
            body = _read_within(response.raw, deadline)
        except BaseException:
            response.close()  # a half-read connection is not reused
            raise
        response.raw.release_conn()  # read to the end: the connection goes back to the pool (keep-alive)
        return response.status_code, body, response.headers

    def completion(self, messages: list[dict]) -> dict:
        """The whole chat-completions response, checked (`checked_completion`): content is text, usage ints."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature, **self.extra_body}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        last_error = ""
        for attempt in range(self.max_attempts):
            self._wait_for_rate_slot()
            if self.stop.is_set():
                raise Stopped()
            retry_after = None
            try:
                status, raw, response_headers = self._post(body, headers)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_error = f"{type(exc).__name__}"
            except requests.RequestException as exc:  # e.g. a body cut off mid-way
                last_error = f"{type(exc).__name__}"
            else:
                if status == 200:
                    try:
                        return checked_completion(json.loads(raw))
                    except (ValueError, MalformedBody) as exc:
                        last_error = f"malformed response body: {str(exc)[:200]}"
                elif status in RETRYABLE_STATUS or 500 <= status < 600:
                    last_error = f"HTTP {status}"
                    retry_after = response_headers.get("Retry-After")
                else:
                    kind = "refused" if status in REFUSED_STATUS else "fatal"
                    message = " ".join(raw[:300].decode("utf-8", "replace").split())  # one line
                    raise ApiError(f"HTTP {status}: {self._redact(message)}", status=status, kind=kind)
            if attempt + 1 < self.max_attempts:
                self._pause(self._backoff(attempt, retry_after))
        raise ApiError(f"gave up after {self.max_attempts} attempts: {self._redact(last_error)}", kind="exhausted")


def parse_json_answer(content: str) -> dict:
    """The first JSON object in an answer (JSON mode or not), or ValidationError."""
    for obj in iter_json_objects(content):
        return obj
    raise ValidationError("the answer is not a JSON object")


def ask_validated(client: ChatClient, messages: list[dict], validate, max_retries: int) -> tuple[dict, dict]:
    """(validated answer, stats) asking again with the validation error up to max_retries times."""
    messages = list(messages)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "reprompts": 0}
    for attempt in range(max_retries + 1):
        content, used = client.chat(messages)
        usage["prompt_tokens"] += used.get("prompt_tokens", 0)
        usage["completion_tokens"] += used.get("completion_tokens", 0)
        try:
            return validate(parse_json_answer(content)), usage
        except ValidationError as exc:
            if attempt == max_retries:
                raise ValidationError(f"invalid after {max_retries + 1} answers: {exc}") from None
            usage["reprompts"] += 1
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": REASK_TEMPLATE.format(error=exc)}]
    raise AssertionError("unreachable")
