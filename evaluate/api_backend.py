"""`--backend openai` for sample_model.py: any OpenAI-compatible chat-completions endpoint (the model
`./run_serve.sh` serves, a teacher such as GPT-4o or Mistral's API, a local Ollama), through the
project's one API client (llm_api.py: retries, Retry-After, rate limit), scored like the local backends.

    python -m evaluate.sample_model --backend openai --api local --api_base http://127.0.0.1:8000/v1 \
        --model_name my-adapter --test_file data/sample/dev_300.csv
    python -m evaluate.sample_model --backend openai --api openai --model_name gpt-4o --test_file ...

Each prompt is sent as chat messages at temperature 0 (the server applies its chat template; the
model served by run_serve.sh has the one training used). With `stop_at_json` an answer is cut where
its first JSON object closes, as the local decoders stop there. Each finished answer is handed back
at once, so a killed run resumes without asking anything twice.
"""

from concurrent.futures import ThreadPoolExecutor, as_completed

from cli import progress
from extraction import json_close_index
from llm_api import ApiError, ChatClient

# statuses that refuse this one prompt (too long, invalid for this model) rather than the whole run: it is
# recorded as an error (no answer, a parse failure) and the run goes on
REFUSED_PROMPT = (400, 413, 422)


def answer_result(choice: dict, usage: dict, fingerprint: str, stop_at_json: bool) -> dict:
    """The record fields the local backends give, from one chat-completions choice."""
    text = (choice.get("message") or {}).get("content") or ""
    reason = "eos" if choice.get("finish_reason") == "stop" else "length"
    tokens = int(usage.get("completion_tokens") or 0)
    if reason == "eos" and str(fingerprint).startswith("vllm"):
        tokens -= 1  # vLLM counts the eos it stopped on; the local backends don't
    if stop_at_json:
        close = json_close_index(text)
        if close is not None:  # a fine-tuned model stops right there; an API that writes on is
            text, reason = text[:close], "json"  # counted for every token it generated
    return {"text": text, "stop_reason": reason, "generated_tokens": tokens}


class ApiGenerator:
    def __init__(self, client: ChatClient, *, workers: int, max_new_tokens: int, stop_at_json: bool, progress: bool):
        self.client, self.workers, self.stop_at_json, self.progress = client, workers, stop_at_json, progress
        self.client.extra_body = {"max_tokens": max_new_tokens}
        self.client.json_mode = False  # the model's own answer, as the local backends see it

    def _ask(self, messages: list[dict]) -> dict:
        try:
            data = self.client.completion(messages)
        except ApiError as exc:
            if exc.status not in REFUSED_PROMPT:
                raise  # the endpoint or the key is wrong, or it is down: every prompt would fail the same way
            return {"text": "", "stop_reason": "error", "generated_tokens": 0, "error": str(exc)}
        return answer_result(data["choices"][0], data.get("usage") or {}, data.get("system_fingerprint") or "",
                             self.stop_at_json)

    def generate(self, prompts: list[list[dict]], on_batch) -> None:
        """Ask every prompt (chat messages), `workers` at a time; `on_batch([(index, result)])` for each
        answer as it arrives. A prompt the endpoint refuses (REFUSED_PROMPT) is recorded as an error; any
        other failure that outlasts the retries ends the run, with every answer so far saved."""
        pool = ThreadPoolExecutor(max_workers=self.workers)
        futures = {pool.submit(self._ask, messages): index for index, messages in enumerate(prompts)}
        try:
            for future in progress(as_completed(futures), total=len(futures), desc="requests", unit="ex",
                                   disable=not self.progress):
                on_batch([(futures[future], future.result())])
        except (KeyboardInterrupt, ApiError):
            pool.shutdown(wait=False, cancel_futures=True)  # nothing more is sent
            raise
        pool.shutdown()
