import json

import pytest

from prompts import TASKS, example_messages, get_task, nli_completion, nli_user_message, render_prompt


def test_nli_prompt_matches_the_original_wording():
    message = nli_user_message("A man sleeps.", "A person rests.")
    assert message.startswith("Premise: A man sleeps.\nHypothesis: A person rests.\n\n")
    assert message.endswith('{"thought_process": "...", "predicted_label": ...}')


def test_completion_is_one_json_object_with_reasoning_first():
    completion = nli_completion("Step 1: x.", 1)
    assert list(json.loads(completion)) == ["thought_process", "predicted_label"]
    assert json.loads(completion)["predicted_label"] == 1


def test_tasks_are_data():
    assert get_task("nli")["labels"] == [0, 1]
    assert get_task(TASKS["hate_speech"])["label_field"] == "classification"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("sentiment")


def test_tokenizer_without_template_gets_the_mistral_inst_format():
    class Bare:
        chat_template = None
        bos_token, eos_token = "<s>", "</s>"
    messages = [{"role": "system", "content": "Be brief."}] + example_messages({"premise": "p", "hypothesis": "h"})
    text = render_prompt(Bare(), messages)
    assert text.startswith("<s>[INST] Be brief.\n\nPremise: p") and text.endswith(" [/INST]")
