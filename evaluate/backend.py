"""What sample_model asks of a backend (HF: hf_backend.py, vLLM: vllm_backend.py, an API: api_backend.py),
in one place the three implement and inference_run.py loads."""

from typing import Protocol, runtime_checkable

from nli_finetune.data_io import DataError

SCORING_NEEDS = ("--scoring logprob needs --backend hf and a label task (not free_text); "
                 "docs/inference.md says what vLLM offers")


@runtime_checkable
class Backend(Protocol):
    """What sample_model asks of a backend. `generate(items, on_batch)` and `score(items, on_batch)` take
    eval_inputs.EvalItems and hand back `[(index in items, result)]` as answers finish (result: the record
    fields of generation.answer_record; `score` adds each label's probability). A backend that cannot score
    labels raises DataError(SCORING_NEEDS) from `score`."""
    tokenizer: object | None       # the prompts' tokenizer; None for an API, which is sent chat messages
    context_length: int | None     # the model's context in tokens, when known (long prompts are counted)
    loaded: dict | None            # what the outputs record of the loaded model (settings.loaded), if anything

    def generate(self, items: list, on_batch) -> None: ...

    def score(self, items: list, on_batch) -> None: ...

    def close(self) -> None: ...


def cannot_score() -> None:
    """`score` of a backend that only generates (vLLM, an API): the same refusal sample_model's check gives."""
    raise DataError(SCORING_NEEDS)
