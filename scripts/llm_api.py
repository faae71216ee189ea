"""One client for any OpenAI-compatible chat-completions API, and the resumable job runner the
data-generation scripts share.

Providers (`--api`): mistral, openai, deepseek, local (vLLM, Ollama, llama.cpp servers); `--api-base`
and `--model-name` override the defaults. Keys come from the environment or `.env` and are never
printed, logged or written: every error message is redacted.

Reliability: retries with exponential backoff and jitter on 429, 5xx, connection errors and timeouts,
honouring Retry-After, a bounded number of attempts, an optional requests-per-minute limit; each answer
validated and re-asked with the validation error a bounded number of times. `run_jobs` appends one JSONL
line per finished example (fsynced, under a lock), skips ids already in the output on a rerun, and
appends exhausted examples to a failures file, retried on the next run unless --skip-failed.
"""

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm

from data_io import append_jsonl, read_jsonl, repair_torn_tail
from evaluate.extraction import iter_json_objects
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


class ValidationError(ValueError):
    """An answer that does not fit the task's schema; the message is sent back to the model."""


def add_api_arguments(parser, default_api="mistral") -> None:
    """The flags every API script takes."""
    parser.add_argument("--api", choices=sorted(PROVIDERS), default=default_api)
    parser.add_argument("--api-base", default=None, help="override the provider's base URL")
    parser.add_argument("--model-name", default=None, help="override the provider's default model")
    parser.add_argument("--workers", type=int, default=4, help="concurrent requests")
    parser.add_argument("--requests-per-minute", type=float, default=None, help="stay under a quota")
    parser.add_argument("--max-attempts", type=int, default=6, help="HTTP attempts per request (429/5xx/timeouts)")
    parser.add_argument("--max-retries", type=int, default=2, help="re-asks after an invalid answer")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry ids in the failures file")
    parser.add_argument("--price-in", type=float, default=None, help="price per million prompt tokens")
    parser.add_argument("--price-out", type=float, default=None, help="price per million completion tokens")
    parser.add_argument("--no-json-mode", action="store_true", help="do not request JSON output mode")


def client_from_args(args) -> "ChatClient":
    """A client for --api/--api-base/--model-name; a missing key fails here, before any work."""
    try:
        from dotenv import load_dotenv
        load_dotenv(override=False)
    except ImportError:
        pass
    provider = PROVIDERS[args.api]
    key = os.environ.get(provider["key_env"], "")
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
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
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
                        return data["choices"][0]["message"]["content"] or "", data.get("usage") or {}
                    except (ValueError, KeyError, IndexError, TypeError):
                        last_error = "malformed response body"
                elif response.status_code in RETRYABLE_STATUS:
                    last_error = f"HTTP {response.status_code}"
                    retry_after = response.headers.get("Retry-After")
                else:
                    raise ApiError(f"HTTP {response.status_code}: {self._redact(response.text[:300])}")
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


def run_jobs(items: list[dict], work, output: Path, *, workers: int, skip_failed: bool = False,
             desc: str = "requests") -> RunSummary:
    """Run `work(item) -> (record, usage)` for every item whose id is not yet in `output`.
    Records are appended as they finish; failures go to `<output>.failures.jsonl` with the reason."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    failures = failures_path(output)
    repair_torn_tail(output)
    done_ids = {str(r["id"]) for r in read_jsonl(output, tolerate_torn_tail=True)} if output.exists() else set()
    failed_ids = set()
    if skip_failed and failures.exists():
        failed_ids = {str(r["id"]) for r in read_jsonl(failures, tolerate_torn_tail=True)}
    todo = [item for item in items if str(item["id"]) not in done_ids | failed_ids]
    summary = RunSummary(skipped=len(items) - len(todo))
    lock = threading.Lock()
    repair_torn_tail(failures)
    with open(output, "a", encoding="utf-8") as out, open(failures, "a", encoding="utf-8") as fail, \
            ThreadPoolExecutor(max_workers=max(workers, 1)) as pool, \
            tqdm(total=len(todo), desc=desc, unit="ex") as bar:
        futures = {pool.submit(work, item): item for item in todo}
        for future in as_completed(futures):
            item = futures[future]
            try:
                record, usage = future.result()
            except (ApiError, ValidationError) as exc:
                with lock:
                    append_jsonl(fail, {"id": item["id"], "reason": str(exc), "time": time.strftime("%FT%T")})
                    summary.failed += 1
            else:
                with lock:
                    append_jsonl(out, record)
                    summary.done += 1
                    summary.prompt_tokens += usage.get("prompt_tokens", 0)
                    summary.completion_tokens += usage.get("completion_tokens", 0)
                    if record.get("correct") is not None:
                        summary.judged += 1
                        summary.correct += bool(record["correct"])
            bar.update(1)
    return summary
