import json

import pytest

from prompts import TASKS, get_task, nli_user_message, render_prompt


def test_nli_prompt_matches_the_original_wording():
    message = nli_user_message("A man sleeps.", "A person rests.")
    assert message.startswith("Premise: A man sleeps.\nHypothesis: A person rests.\n\n")
    assert message.endswith('{"thought_process": "...", "predicted_label": ...}')


def test_completion_is_one_json_object_with_reasoning_first():
    completion = TASKS["nli"].answer(1, "Step 1: x.")
    assert list(json.loads(completion)) == ["thought_process", "predicted_label"]
    assert json.loads(completion)["predicted_label"] == 1


def test_a_task_is_one_object_that_owns_its_labels_prompt_and_answer():
    assert get_task("nli") is TASKS["nli"] and TASKS["nli"].labels == (0, 1)
    assert TASKS["hate_speech"].label_field == "classification"
    assert TASKS["hate_speech"].normalize_label("Offensive.") == "not_hate"  # the data's word, one map
    assert TASKS["free_text"].free_text and not TASKS["nli"].free_text
    with pytest.raises(ValueError, match="unknown task 'sentiment'; known tasks: boolq, free_text, hate_speech, nli"):
        get_task("sentiment")


def test_tokenizer_without_template_gets_the_mistral_inst_format():
    class Bare:
        chat_template = None
        bos_token, eos_token = "<s>", "</s>"
    messages = [{"role": "system", "content": "Be brief."}] + TASKS["nli"].messages({"premise": "p", "hypothesis": "h"})
    text = render_prompt(Bare(), messages)
    assert text.startswith("<s>[INST] Be brief.\n\nPremise: p") and text.endswith(" [/INST]")
    import prompts
    prompts._fallback_template.cache_clear()
    for _ in range(50):  # compiled once, not per example (compiling cost ~10 ms a row)
        assert render_prompt(Bare(), messages) == text
    assert prompts._fallback_template.cache_info().misses == 1

