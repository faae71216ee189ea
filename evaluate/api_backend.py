"""`--backend openai` for sample_model.py: any OpenAI-compatible chat-completions endpoint (the model
`./run_serve.sh` serves, a teacher such as GPT-4o or Mistral's API, a local Ollama), through the
project's one API client (llm_api.py: retries, Retry-After, rate limit) and its one job runner
(job_runner.run_pool: the same stop, cancel and save rules as data generation), scored like the local backends.

    python -m evaluate.sample_model --backend openai --api local --api_base http://127.0.0.1:8000/v1 \
        --model_name my-adapter --test_file data/sample/dev_300.csv
    python -m evaluate.sample_model --backend openai --api openai --model_name gpt-4o --test_file ...

Each prompt is sent as chat messages at temperature 0 (the server applies its chat template; the
model served by run_serve.sh has the one training used). With `stop_at_json` an answer is cut right after
its first complete answer object (valid JSON holding a valid label), as the local decoders stop there;
prose before it, braces and all, is kept. Each finished answer is handed back at once, so a killed run
asks again only the prompts that were in flight. A prompt the endpoint refuses (400, 413, 422) or that
outlasts its retries becomes an error record, asked again on a rerun.
"""

from argparse import Namespace

from evaluate.backend import cannot_score
from nli_finetune.data_io import DataError
from nli_finetune.extraction import iter_json_spans
from nli_finetune.job_runner import run_pool
from nli_finetune.llm_api import ApiError, client_from_args
from prompts import Task


def answer_end(text: str, task: Task) -> int | None:
    """Index just past the first complete JSON object that holds a valid label, or None."""
    for _, end, obj in iter_json_spans(text):
        if task.label_field in obj and task.normalize_label(obj[task.label_field]) is not None:
            return end + 1
    return None


def answer_result(choice: dict, usage: dict, fingerprint: str, stop_at_json: bool, task: Task) -> dict:
    """The record fields the local backends give, from one checked chat-completions choice."""
    text = choice["message"]["content"]
    reason = "eos" if choice.get("finish_reason") == "stop" else "length"
    tokens = usage.get("completion_tokens", 0)
    if reason == "eos" and str(fingerprint).startswith("vllm"):
        tokens = max(tokens - 1, 0)  # vLLM counts the eos it stopped on; the local backends don't
    if stop_at_json:
        end = answer_end(text, task)
        if end is not None:  # a fine-tuned model stops right there; an API that writes on is
            text, reason = text[:end], "json"  # counted for every token it generated
    return {"text": text, "stop_reason": reason, "generated_tokens": tokens}


def error_result(exc: ApiError) -> dict:
    """A prompt the endpoint refused or that outlasted its retries: no answer (a parse failure), the
    message kept; sample_model asks it again on a rerun."""
    return {"text": "", "stop_reason": "error", "generated_tokens": 0, "error": str(exc)}


class ApiBackend:
    """sample_model's backend (inference_run.Backend) for an endpoint: items are sent as chat messages."""
    tokenizer = None       # the endpoint renders the messages with its own chat template
    context_length = None  # the endpoint refuses a prompt past its context (an error record)
    loaded = None

    def __init__(self, run):
        try:
            client = client_from_args(Namespace(api=run.api, api_base=run.api_base, model_name=run.model_name,
                                                timeout=run.timeout, max_attempts=run.max_attempts,
                                                requests_per_minute=run.requests_per_minute, no_json_mode=True,
                                                workers=run.workers))
        except ApiError as exc:  # no key: a setup error, before any request
            raise DataError(str(exc)) from None
        self.client, self.workers, self.stop_at_json, self.progress = client, run.workers, run.stop_at_json, not run.quiet
        self.task = run.task
        self.client.extra_body = {"max_tokens": run.max_new_tokens}
        self.client.json_mode = False  # the model's own answer, as the local backends see it

    def _ask(self, messages: list[dict]) -> dict:
        data = self.client.completion(messages)
        return answer_result(data["choices"][0], data["usage"], data["system_fingerprint"], self.stop_at_json,
                             self.task)

    def generate(self, items: list, on_batch) -> None:
        """Ask every item's chat messages through `run_pool`; `on_batch([(index, result)])` for each
        answer or error record as it arrives. The endpoint failing the first prompts, a fatal status
        (401, 403, 404), Ctrl-C or a failed save end the run with what arrived saved."""
        prompts = [item.messages for item in items]
        run_pool(list(range(len(prompts))), lambda index: self._ask(prompts[index]),
                 lambda index, result: on_batch([(index, result)]),
                 lambda index, exc: on_batch([(index, error_result(exc))]),
                 workers=self.workers, stop=self.client.stop, desc="requests", show_progress=self.progress)

    def score(self, items: list, on_batch) -> None:
        cannot_score()

    def close(self) -> None:
        """Nothing to stop: each request ends with its answer."""
