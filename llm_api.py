"""One client for any OpenAI-compatible chat-completions API, and the resumable job runner the
data-generation scripts share.

Providers (`--api`): mistral, openai, deepseek, local (vLLM, Ollama, llama.cpp servers); `--api-base`
and `--model-name` override the defaults. Keys come from the environment or `.env` and are never
printed, logged or written: every error message is redacted.

Reliability: retries with exponential backoff and jitter on 429, 5xx, connection errors and timeouts,
honouring Retry-After, a bounded number of attempts, an optional requests-per-minute limit; each answer
validated and re-asked with the validation error a bounded number of times. `run_jobs` appends one JSONL
line per finished example (fsynced, by the main thread), skips ids already in the output on a rerun (refusing
an output generated from other input rows), and
appends exhausted examples to a failures file, retried on the next run unless --skip-failed.
"""

import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from cli import above_zero, at_least, progress
from data_io import DataError, append_jsonl, check_outputs, load_env_file, read_jsonl, repair_torn_tail
from extraction import iter_json_objects
from prompts import REASK_TEMPLATE

PROVIDERS = {
    "mistral": {"base": "https://api.mistral.ai/v1", "key_env": "MISTRAL_API_KEY", "model": "open-mistral-7b"},
    "openai": {"base": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY", "model": "gpt-4o-mini"},
    "deepseek": {"base": "https://api.deepseek.com/v1", "key_env": "DEEPSEEK_API_KEY", "model": "deepseek-chat"},
    "local": {"base": "http://127.0.0.1:8000/v1", "key_env": "API_KEY", "model": "local-model"},
}
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ApiError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of a refused request; None after retries ran out


class ValidationError(ValueError):
    """An answer that does not fit the task's schema; the message is sent back to the model."""


def add_api_arguments(parser, default_api="mistral") -> None:
    """The flags every API script takes."""
    parser.add_argument("--api", choices=sorted(PROVIDERS), default=default_api)
    parser.add_argument("--api-base", default=None, help="override the provider's base URL")
    parser.add_argument("--model-name", default=None, help="override the provider's default model")
    parser.add_argument("--workers", type=at_least(1), default=4, help="concurrent requests")
    parser.add_argument("--requests-per-minute", type=above_zero, default=None, help="stay under a quota")
    parser.add_argument("--max-attempts", type=at_least(1), default=6, help="HTTP attempts per request (429/5xx/timeouts)")
    parser.add_argument("--max-retries", type=at_least(0), default=2, help="re-asks after an invalid answer")
    parser.add_argument("--timeout", type=above_zero, default=60.0, help="seconds per HTTP request")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry ids in the failures file")
    parser.add_argument("--price-in", type=float, default=None, help="price per million prompt tokens")
    parser.add_argument("--price-out", type=float, default=None, help="price per million completion tokens")
    parser.add_argument("--no-json-mode", action="store_true", help="do not request JSON output mode")


def client_from_args(args) -> "ChatClient":
    """A client for --api/--api-base/--model-name; a missing key fails here, before any work."""
    load_env_file()
    provider = PROVIDERS[args.api]
    key = os.environ.get(provider["key_env"], "")
    if args.api == "local":  # the server scripts/serve.py runs checks SERVE_API_KEY
        key = key or os.environ.get("SERVE_API_KEY", "")
    if not key and args.api != "local":
        raise ApiError(f"no API key: set {provider['key_env']} in the environment or in .env "
                       f"(--api {args.api})")
    return ChatClient(base_url=args.api_base or provider["base"], api_key=key or "EMPTY",
                      model=args.model_name or provider["model"], timeout=args.timeout,
                      max_attempts=args.max_attempts, requests_per_minute=args.requests_per_minute,
                      json_mode=not args.no_json_mode, pool_size=max(args.workers, 1))


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
    _session: requests.Session = field(init=False, repr=False)
    _rate_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _next_slot: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self):
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def _redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key and self.api_key != "EMPTY" else text

    def _wait_for_rate_slot(self) -> None:
        if not self.requests_per_minute:
            return
        interval = 60.0 / self.requests_per_minute
        with self._rate_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + interval
        time.sleep(max(0.0, slot - now))

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.backoff_cap)
            except ValueError:
                pass
        delay = min(self.backoff_base * 2 ** attempt, self.backoff_cap)
        return delay * (0.5 + random.random() / 2)  # jitter: spread retries of many workers

    def chat(self, messages: list[dict]) -> tuple[str, dict]:
        """(answer text, usage) for one chat request, retrying what is worth retrying."""
        data = self.completion(messages)
        return data["choices"][0]["message"]["content"] or "", data.get("usage") or {}

    def completion(self, messages: list[dict]) -> dict:
        """The whole chat-completions response (with at least one choice holding a message)."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature, **self.extra_body}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        last_error = ""
        for attempt in range(self.max_attempts):
            self._wait_for_rate_slot()
            retry_after = None
            try:
                response = self._session.post(f"{self.base_url.rstrip('/')}/chat/completions", json=body,
                                              headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_error = f"{type(exc).__name__}"
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                        if isinstance(data["choices"][0]["message"], dict):
                            return data
                    except (ValueError, KeyError, IndexError, TypeError):
                        pass
                    last_error = "malformed response body"
                elif response.status_code in RETRYABLE_STATUS:
                    last_error = f"HTTP {response.status_code}"
                    retry_after = response.headers.get("Retry-After")
                else:
                    raise ApiError(f"HTTP {response.status_code}: {self._redact(response.text[:300])}",
                                   status=response.status_code)
            if attempt + 1 < self.max_attempts:
                time.sleep(self._backoff(attempt, retry_after))
        raise ApiError(f"gave up after {self.max_attempts} attempts: {self._redact(last_error)}")


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
        usage["prompt_tokens"] += int(used.get("prompt_tokens") or 0)
        usage["completion_tokens"] += int(used.get("completion_tokens") or 0)
        try:
            return validate(parse_json_answer(content)), usage
        except ValidationError as exc:
            if attempt == max_retries:
                raise ValidationError(f"invalid after {max_retries + 1} answers: {exc}") from None
            usage["reprompts"] += 1
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": REASK_TEMPLATE.format(error=exc)}]
    raise AssertionError("unreachable")


@dataclass
class RunSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    correct: int = 0
    judged: int = 0

    def line(self, price_in=None, price_out=None) -> str:
        text = f"{self.done} done, {self.failed} failed, {self.skipped} skipped (already done)"
        if self.judged:
            text += f"; teacher accuracy {self.correct / self.judged:.3f} on {self.judged}"
        text += f"; tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion"
        if price_in is not None and price_out is not None:
            cost = self.prompt_tokens / 1e6 * price_in + self.completion_tokens / 1e6 * price_out
            text += f"; cost {cost:.4f}"
        return text


def failures_path(output: Path) -> Path:
    return output.with_name(output.stem + ".failures.jsonl")


class JobsInterrupted(KeyboardInterrupt):
    """Ctrl-C during run_jobs: no new request was sent after it; what finished is saved."""

    def __init__(self, summary: "RunSummary"):
        super().__init__()
        self.summary = summary


def check_job_files(items: list[dict], source, output: Path, identity_fields) -> set[str]:
    """The ids already done in `output`, after refusing what would lose or mix up data: an output that
    is the input, duplicate ids in the input, and an output whose records were generated from other
    input rows (same id, different premise or hypothesis)."""
    check_outputs({"input": source}, {"output": output, "failures file": failures_path(output)})
    by_id = {}
    for item in items:
        key = str(item["id"])
        if key in by_id:
            raise DataError(f"{source}: {item.get('_where', 'a row')}: field 'id': duplicate id {key}")
        by_id[key] = item
    if not items:
        raise DataError(f"{source}: no rows to process")
    if not output.exists():
        return set()
    repair_torn_tail(output)
    done = set()
    for record in read_jsonl(output, tolerate_torn_tail=True):
        key = str(record.get("id"))
        item = by_id.get(key)
        changed = [f for f in identity_fields if item is not None and f in record and record[f] != item.get(f)]
        if changed:
            raise DataError(f"{output}: line {record['_line']}: id {key} was generated from another input "
                            f"('{changed[0]}' differs from {source}); choose another output file, or move "
                            "this one away to start over")
        done.add(key)
    return done


def run_jobs(items: list[dict], work, output: Path, *, source, workers: int, skip_failed: bool = False,
             desc: str = "requests", identity_fields=("premise", "hypothesis")) -> RunSummary:
    """Run `work(item) -> (record, usage)` for every item whose id is not yet in `output`.
    Records are appended as they finish; failures go to `<output>.failures.jsonl` with the reason.
    Ctrl-C sends no further request, saves the answers of the requests in flight, and raises
    JobsInterrupted."""
    output = Path(output)
    done_ids = check_job_files(items, source, output, identity_fields)
    failures = failures_path(output)
    failed_ids = set()
    if skip_failed and failures.exists():
        failed_ids = {str(r["id"]) for r in read_jsonl(failures, tolerate_torn_tail=True)}
    todo = [item for item in items if str(item["id"]) not in done_ids | failed_ids]
    summary = RunSummary(skipped=len(items) - len(todo))
    output.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(failures)
    pool = ThreadPoolExecutor(max_workers=max(workers, 1))
    with open(output, "a", encoding="utf-8") as out, progress(total=len(todo), desc=desc, unit="ex") as bar:
        futures = {pool.submit(work, item): item for item in todo}
        saved = set()
        try:
            for future in as_completed(futures):
                _save_result(future, futures[future], out, failures, summary)
                saved.add(future)
                bar.update(1)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()  # queued requests are never sent
            running = [f for f in futures if f not in saved and not f.cancelled()]
            print(f"\ninterrupted: no new requests; saving the {len(running)} in flight "
                  "(Ctrl-C again to drop them)", file=sys.stderr)
            try:
                for future in as_completed(running):
                    _save_result(future, futures[future], out, failures, summary)
            except KeyboardInterrupt:
                pass
            pool.shutdown(wait=False, cancel_futures=True)
            raise JobsInterrupted(summary) from None
    pool.shutdown()
    return summary


def _save_result(future, item: dict, out, failures: Path, summary: RunSummary) -> None:
    if future.cancelled():
        return
    try:
        record, usage = future.result()
    except (ApiError, ValidationError) as exc:
        with open(failures, "a", encoding="utf-8") as fail:  # opened only when something failed
            append_jsonl(fail, {"id": item["id"], "reason": str(exc), "time": time.strftime("%FT%T")})
        summary.failed += 1
        return
    append_jsonl(out, record)
    summary.done += 1
    summary.prompt_tokens += usage.get("prompt_tokens", 0)
    summary.completion_tokens += usage.get("completion_tokens", 0)
    if record.get("correct") is not None:
        summary.judged += 1
        summary.correct += bool(record["correct"])


def run_job_script(name: str, run) -> int:
    """Exit status of a data-generation script: 2 for bad input, 130 after Ctrl-C (with a summary line)."""
    try:
        return run()
    except (ApiError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full or the output made read-only: what was appended so far is kept
        print(f"error: cannot write: {exc}", file=sys.stderr)
        return 1
    except JobsInterrupted as exc:
        print(f"{name}: interrupted by Ctrl-C: {exc.summary.line()}; rerun the same command to continue",
              file=sys.stderr)
        return 130
