"""greedy_decode.py gives exactly the tokens transformers' `generate` gives, and the batch
falls back to `generate` whenever the fast path can't promise that."""

import pytest
import torch

from nli_finetune.generation import JsonCloseTracker, generate_answers, generate_batch
from nli_finetune.greedy_decode import GROW, greedy_decode, unsupported_reason
from nli_finetune.modeling import load_for_inference

TEXTS = ["a", "the cat sat on the mat", "premise: two dogs run. hypothesis: animals move.",
         "short", "a much longer prompt " * 6, "{\"thought_process\": \"", "x y z", "entailment or not?"]


def encoded(tokenizer, texts=TEXTS):
    return [tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.bos_token_id] for text in texts]


def frequent_token(model, tokenizer, prompts) -> int:
    """A token the random model first emits at different steps in different rows: used as the stop
    token so rows stop at different times (a random model hardly ever emits its real eos)."""
    runs = generate_batch(model, prompts, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                          max_new_tokens=12)
    first_steps: dict[int, set] = {}
    for ids, _ in runs:
        for token in set(ids):
            first_steps.setdefault(token, set()).add(ids.index(token))
    return max(first_steps, key=lambda token: len(first_steps[token]))


@pytest.mark.parametrize("arch", ["mistral", "llama", "qwen2"])
def test_same_tokens_as_generate_with_rows_stopping_at_different_steps(tiny_models, arch):
    model, tokenizer, _ = load_for_inference(str(tiny_models[arch]), device="cpu")
    prompts = encoded(tokenizer)
    stop = frequent_token(model, tokenizer, prompts)
    kwargs = {"eos_id": stop, "pad_id": tokenizer.pad_token_id, "max_new_tokens": 12}
    expected = generate_batch(model, prompts, **kwargs)
    got = greedy_decode(model, prompts, **kwargs)
    assert got == expected
    reasons = [reason for _, reason in got]
    assert "eos" in reasons and "length" in reasons
    assert len({len(ids) for ids, reason in got if reason == "eos"}) > 1  # rows left the batch at different steps


def test_cache_grows_past_its_spare_capacity_and_prefill_runs_in_parts(tiny_mistral, monkeypatch):
    from nli_finetune import greedy_decode as greedy
    monkeypatch.setattr(greedy, "PREFILL_TOKENS", 16)  # one or two rows per prefill forward
    model, tokenizer, _ = load_for_inference(str(tiny_mistral), device="cpu")
    prompts = encoded(tokenizer)
    kwargs = {"eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id, "max_new_tokens": GROW + 20}
    got = greedy_decode(model, prompts, **kwargs)
    assert got == generate_batch(model, prompts, **kwargs)
    assert all(len(ids) == GROW + 20 for ids, reason in got if reason == "length")


class ClosingToken:
    """A tokenizer whose one frequent token decodes to "{}", so random-model rows close a JSON
    object (and stop) at different steps."""

    def __init__(self, tokenizer, token_id):
        self.tokenizer, self.token_id = tokenizer, token_id

    def decode(self, ids, **kwargs):
        return "{}" if list(ids) == [self.token_id] else self.tokenizer.decode(ids, **kwargs)


def test_json_stop_matches_generate(tiny_mistral):
    model, tokenizer, _ = load_for_inference(str(tiny_mistral), device="cpu")
    prompts = encoded(tokenizer)
    closing = ClosingToken(tokenizer, frequent_token(model, tokenizer, prompts))
    kwargs = {"eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id, "max_new_tokens": 12}
    expected = generate_batch(model, prompts, json_tokenizer=closing, **kwargs)
    got = greedy_decode(model, prompts, json_tracker=JsonCloseTracker(closing), **kwargs)
    assert got == expected
    assert {"json", "length"} <= {reason for _, reason in got}


def test_json_tracker_stops_after_the_closing_brace_and_ignores_braces_in_strings(tiny_mistral):
    from nli_finetune.modeling import load_tokenizer
    tokenizer = load_tokenizer(str(tiny_mistral))
    tracker = JsonCloseTracker(tokenizer)
    text = '{"thought_process": "a } inside", "predicted_label": 1} trailing'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    closed_at = next(i for i, token in enumerate(ids) if tracker.feed(0, token))
    assert tokenizer.decode(ids[:closed_at + 1]).rstrip().endswith("1}")
    assert "inside" in tokenizer.decode(ids[:closed_at + 1])


def test_unmerged_lora_adapter_gives_the_same_answers(trained_adapter):
    model, tokenizer, info = load_for_inference(str(trained_adapter), device="cpu", merge_lora=False)
    assert info["adapter"] and not info["merged"]
    prompts = encoded(tokenizer)
    fast = generate_answers(model, tokenizer, prompts, batch_size=4, max_new_tokens=20, progress=False)
    slow = generate_answers(model, tokenizer, prompts, batch_size=4, max_new_tokens=20, progress=False,
                            decoder="generate")
    assert fast == slow


def test_4bit_model_gives_the_same_answers(tiny_mistral):
    from nli_finetune.modeling import can_load_4bit
    usable, why = can_load_4bit("cpu")
    if not usable:
        pytest.skip(why)
    model, tokenizer, info = load_for_inference(str(tiny_mistral), device="cpu", load_in_4bit=True)
    assert info["load_in_4bit"]
    prompts = encoded(tokenizer)
    fast = generate_answers(model, tokenizer, prompts, batch_size=8, max_new_tokens=16, progress=False)
    assert fast == generate_answers(model, tokenizer, prompts, batch_size=8, max_new_tokens=16, progress=False,
                                    decoder="generate")


def test_settings_that_change_logits_fall_back_to_generate(tiny_mistral, capsys):
    model, tokenizer, _ = load_for_inference(str(tiny_mistral), device="cpu")
    prompts = encoded(tokenizer)
    assert unsupported_reason(model, 30, 20) is None
    model.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in unsupported_reason(model, 30, 20)
    penalised = generate_answers(model, tokenizer, prompts, batch_size=8, max_new_tokens=12, progress=False)
    assert "using transformers' generate (generation_config.repetition_penalty" in capsys.readouterr().err
    forced = generate_answers(model, tokenizer, prompts, batch_size=8, max_new_tokens=12, progress=False,
                              decoder="generate")
    assert penalised == forced
    model.generation_config.repetition_penalty = 1.0
    plain = generate_answers(model, tokenizer, prompts, batch_size=8, max_new_tokens=12, progress=False)
    assert plain != penalised  # the penalty really was applied on the fallback path


def test_a_sliding_window_shorter_than_the_answer_falls_back(tiny_mistral):
    model, _, _ = load_for_inference(str(tiny_mistral), device="cpu")
    model.config.sliding_window = 32
    reason = unsupported_reason(model, 30, 20)
    assert reason and "sliding window 32" in reason
    assert unsupported_reason(model, 5, 20) is None


def test_unknown_decoder_is_an_error(tiny_mistral):
    model, tokenizer, _ = load_for_inference(str(tiny_mistral), device="cpu")
    with pytest.raises(ValueError, match="decoder must be one of"):
        generate_answers(model, tokenizer, [[1, 2]], decoder="fast", progress=False)


@torch.inference_mode()
def test_generate_answers_order_and_batching_do_not_change_answers(tiny_mistral):
    model, tokenizer, _ = load_for_inference(str(tiny_mistral), device="cpu")
    prompts = encoded(tokenizer)
    together = generate_answers(model, tokenizer, prompts, batch_size=8, max_new_tokens=10, progress=False)
    alone = [generate_answers(model, tokenizer, [p], batch_size=1, max_new_tokens=10, progress=False)[0]
             for p in prompts]
    assert together == alone
