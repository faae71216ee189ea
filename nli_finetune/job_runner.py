"""The one job runner for API work: data generation (scripts/generate_thoughts*.py, score_thoughts.py) and
`sample_model --backend openai` (evaluate/api_backend.py) both run their requests through `run_pool`.

    from nli_finetune.job_runner import run_pool
    run_pool(items, work, on_done, on_failed, workers=8, stop=client.stop)

- Items go to `workers` threads through a bounded window (at most 2 x workers submitted ahead), so a
  stopping run has little to cancel and nothing queued is ever sent.
- Results are handed to `on_done` / `on_failed` in the calling thread as they finish (saving there).
- A per-item failure (llm_api's rule: a "refused" prompt, retries "exhausted", an answer still invalid after
  its re-asks) goes to `on_failed`; when the first FIRST_K finished items (or all, when fewer) all failed
  at the endpoint, the endpoint refuses everything: the run ends with its message.
- Any other exception (a fatal ApiError such as 401, an OSError while saving, Ctrl-C) stops the run: the
  stop flag makes every worker quit before its next wait or attempt, the queue is dropped, the answers in
  flight are saved (a second Ctrl-C drops them), and the exception is re-raised.

On top of it, `run_jobs` is the resumable JSONL job of the data-generation scripts (one line per finished
example, fsynced; ids already done are skipped; failures to `<output>.failures.jsonl`), `output_lock`
refuses a second run on the same output while one is running, and `api_job_parser` / `ask_teacher` /
`run_job_script` are what those scripts share.
"""

import argparse
import fcntl
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nli_finetune.cli import ArgumentParser, progress
from nli_finetune.data_io import DataError, append_jsonl, check_outputs, check_unique_ids, read_jsonl, repair_torn_tail
from nli_finetune.llm_api import (
    ApiError,
    Stopped,
    ValidationError,
    add_api_arguments,
    ask_validated,
    client_from_args,
)
from nli_finetune.redaction import redact
from nli_finetune.resume import changes, refusal

FIRST_K = 5  # the first this many answers all failed at the endpoint: it refuses everything, stop


def per_item(exc: BaseException) -> bool:
    """A failure of this one item; any other exception ends the run."""
    return isinstance(exc, ValidationError) or (isinstance(exc, ApiError) and exc.kind in ("refused", "exhausted"))


class _Outcomes:
    """Counts finished items to spot an endpoint that fails every prompt (the first k all failed)."""

    def __init__(self, total: int):
        self.first_k, self.succeeded, self.endpoint_failures = min(FIRST_K, total), 0, 0

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, ApiError):
            self.endpoint_failures += 1
        if not self.succeeded and self.endpoint_failures >= self.first_k:
            raise ApiError(f"the endpoint failed the first {self.endpoint_failures} prompts, so nothing more is "
                           f"sent; its answer: {exc}", status=getattr(exc, "status", None), kind="fatal")


def run_pool(items: list, work, on_done, on_failed, *, workers: int, stop: threading.Event, desc: str = "requests",
             show_progress: bool = True) -> None:
    """Call `work(item)` for every item, `workers` at a time; `on_done(item, value)` or
    `on_failed(item, exc)` in this thread as each finishes. See the module docstring for what stops it."""
    pool = ThreadPoolExecutor(max_workers=max(workers, 1))
    queue, running = iter(items), {}
    outcomes = _Outcomes(len(items))
    bar = progress(total=len(items), desc=desc, unit="ex", disable=not show_progress)

    def deliver(future, item) -> None:
        try:
            value = future.result()
        except Stopped:
            return
        except (ApiError, ValidationError) as exc:
            if not per_item(exc):
                raise
            on_failed(item, exc)
            outcomes.failed(exc)
        else:
            on_done(item, value)
            outcomes.succeeded += 1
        bar.update(1)

    try:
        for item in queue:
            running[pool.submit(work, item)] = item
            if len(running) >= 2 * workers:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    deliver(future, running.pop(future))
        for future in as_completed(list(running)):
            deliver(future, running.pop(future))
    except BaseException as exc:
        stop.set()  # workers waiting to retry give up now; none starts another request
        _save_in_flight(running, deliver, interrupted=isinstance(exc, KeyboardInterrupt))
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()


def _save_in_flight(running: dict, deliver, interrupted: bool) -> None:
    for future in running:
        future.cancel()  # queued: never sent
    in_flight = {f: item for f, item in running.items() if not f.cancelled()}
    if in_flight and interrupted:  # after an error, its own line says what happened
        print(f"\ninterrupted: no new requests; saving the {len(in_flight)} answers in flight (Ctrl-C again to "
              "drop them)", file=sys.stderr)
    try:
        for future in as_completed(in_flight):
            try:
                deliver(future, in_flight[future])
            except Exception:  # noqa: BLE001 - the first error is the one re-raised; this answer is lost
                pass
    except KeyboardInterrupt:
        pass


def output_locked(path) -> bool:
    """Whether a run holds `output_lock(path)` now: a probe for plans (`--dry_run`), which write nothing
    (no lock file is created). Not for a process that holds the lock itself: its own lock counts too."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def output_lock(path):
    """Hold `<path>.lock` while a run writes `path`: a second run on the same output is refused
    (DataError) instead of asking everything twice. The lock dies with its process, even on SIGKILL."""
    lock = Path(f"{path}.lock")
    created = [folder for folder in [lock.parent, *lock.parent.parents] if not folder.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataError(f"{path}: another run is writing it now ({lock.name} is held); wait for it to end or "
                            "stop it, or choose another output") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the run before removed it as we opened it: take a fresh one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
        for folder in created:  # a refused run leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:
                break


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

    def __init__(self, summary: RunSummary):
        super().__init__()
        self.summary = summary


def check_job_inputs(items: list[dict], source, output: Path) -> None:
    """Refuse an output that is the input, duplicate ids in the input and an empty input."""
    check_outputs({"input": source}, {"output": output, "failures file": failures_path(output)})
    check_unique_ids((str(item["id"]), f"{source}: {item.get('_where', 'a row')}") for item in items)
    if not items:
        raise DataError(f"{source}: no rows to process")


def record_inputs(record: dict, item: dict | None, identity_fields, model: str) -> tuple[dict, dict]:
    """(what a saved record was computed from, what this run would compute it from): its model (one output
    holds one teacher's answers) and, for an id still in the input, the identity fields the record kept."""
    fields = [f for f in identity_fields if item is not None and f in record]
    return ({"model": record.get("model", model), **{f: record[f] for f in fields}},
            {"model": model, **{f: item.get(f) for f in fields}})


def ids_done(items: list[dict], source, output: Path, identity_fields, model: str) -> set[str]:
    """The ids already in `output`, after refusing an output generated from other input rows (same id,
    different premise or hypothesis) or by another model (a resume must not mix teachers)."""
    if not output.exists():
        return set()
    by_id = {str(item["id"]): item for item in items}
    repair_torn_tail(output)
    done = set()
    for record in read_jsonl(output, tolerate_torn_tail=True):
        key, where = str(record.get("id")), f"{output}: line {record['_line']}: id {record.get('id')}"
        changed = changes(*record_inputs(record, by_id.get(key), identity_fields, model))
        if changed:
            raise DataError(refusal(where, changed, "choose another output file, or move this one away to start "
                                    "over", what="this record", than=f"this run (input {source}, model '{model}')"))
        done.add(key)
    return done


def run_jobs(items: list[dict], work, output: Path, *, source, workers: int, stop: threading.Event, model: str,
             skip_failed: bool = False, desc: str = "requests",
             identity_fields=("premise", "hypothesis")) -> RunSummary:
    """Run `work(item) -> (record, usage)` through `run_pool` for every item whose id is not yet in `output`.
    Records are appended as they finish; failures go to `<output>.failures.jsonl` with the reason.
    Ctrl-C raises JobsInterrupted with the summary so far."""
    output = Path(output)
    check_job_inputs(items, source, output)
    failures = failures_path(output)
    with output_lock(output):
        done_ids = ids_done(items, source, output, identity_fields, model)
        if skip_failed and failures.exists():
            done_ids |= {str(r["id"]) for r in read_jsonl(failures, tolerate_torn_tail=True)}
        todo = [item for item in items if str(item["id"]) not in done_ids]
        summary = RunSummary(skipped=len(items) - len(todo))
        repair_torn_tail(failures)
        with open(output, "a", encoding="utf-8") as out:
            def on_done(item, value):
                record, usage = value
                append_jsonl(out, record)
                summary.done += 1
                summary.prompt_tokens += usage.get("prompt_tokens", 0)
                summary.completion_tokens += usage.get("completion_tokens", 0)
                if record.get("correct") is not None:
                    summary.judged += 1
                    summary.correct += bool(record["correct"])

            def on_failed(item, exc):
                with open(failures, "a", encoding="utf-8") as fail:  # opened only when something failed
                    append_jsonl(fail, {"id": item["id"], "reason": redact(str(exc)), "time": time.strftime("%FT%T")})
                summary.failed += 1

            try:
                run_pool(todo, work, on_done, on_failed, workers=workers, stop=stop, desc=desc)
            except KeyboardInterrupt:
                raise JobsInterrupted(summary) from None
    return summary


def api_job_parser(doc: str, input_flag: str, input_help: str, output_flag: str, output_help: str) -> ArgumentParser:
    """The command line every data-generation script has: its input, its output and the API flags."""
    parser = ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(input_flag, required=True, help=input_help)
    parser.add_argument(output_flag, required=True, help=output_help)
    add_api_arguments(parser)
    return parser


def ask_teacher(args, items: list[dict], *, system: str, user_template: str, validate, to_record, output, source,
                desc: str) -> RunSummary:
    """Ask the teacher of --api/--api-base/--model-name about every item (system prompt + `user_template`
    filled from the item), validate and re-ask, and save `to_record(item, answer, usage)` plus the model's
    name; resumable (`run_jobs`). A missing key is a DataError before any request."""
    client = client_from_args(args)

    def work(item):
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": user_template.format(**item)}]
        answer, usage = ask_validated(client, messages, validate, args.max_retries)
        return {**to_record(item, answer, usage), "model": client.model}, usage

    return run_jobs(items, work, Path(output), source=source, workers=args.workers, stop=client.stop,
                    model=client.model, skip_failed=args.skip_failed, desc=desc)


def finish_line(name: str, summary: RunSummary, args, output) -> int:
    """Print the end-of-run summary; exit 1 when some example failed for good (a pipeline notices)."""
    print(f"{name}: {summary.line(args.price_in, args.price_out)} -> {output}")
    return 0 if summary.failed == 0 else 1


def run_job_script(name: str, run) -> int:
    """Exit status of a data-generation script: 2 for bad input or setup, 1 when the endpoint ended the run
    or a write failed, 130 after Ctrl-C (with a summary line)."""
    try:
        return run()
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    except ApiError as exc:  # 401/403/404, or every prompt refused: what finished is saved
        print(f"error: {redact(exc)}; rerun the same command to continue", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full or the output made read-only: what was appended so far is kept
        print(f"error: cannot write: {redact(exc)}", file=sys.stderr)
        return 1
    except JobsInterrupted as exc:
        print(f"{name}: interrupted by Ctrl-C: {exc.summary.line()}; rerun the same command to continue",
              file=sys.stderr)
        return 130
