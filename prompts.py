"""Every prompt template, the label tasks, and the one function that turns an example into model input.

Training (`train/sft_data.py`) and inference (`evaluate/sample_model.py`) both call `encode_prompt`,
so the token ids a training example starts with are exactly the ids inference feeds the model.

A *task* is data: which JSON field holds the label, which labels are valid, and what names map to
them. A new classification task is a new entry in TASKS, not new code.
"""

import json

NLI_USER_TEMPLATE = (
    "Premise: {premise}\nHypothesis: {hypothesis}\n\n"
    "Use chain of thought reasoning to determine if the hypothesis is entailed by the premise. "
    "Provide your reasoning and the final label (0 or 1) in JSON format: "
    '{{"thought_process": "...", "predicted_label": ...}}'
)

# The same question answered with the label alone: a small model (the CPU demo's SmolLM2-135M) learns
# the task from short answers in minutes, where chain-of-thought answers take hours to pay off.
NLI_LABEL_SYSTEM = "You decide whether a premise entails a hypothesis."
NLI_LABEL_USER_TEMPLATE = (
    "Premise: {premise}\nHypothesis: {hypothesis}\n"
    'Entailed? Answer {{"predicted_label": 1}} for yes, {{"predicted_label": 0}} for no.'
)

HATE_SPEECH_SYSTEM = (
    "You are an expert hate speech detection system. Analyze the given text and determine if it "
    "contains hate speech targeting protected groups (LGBTQ+, Mexican, Middle Eastern communities)."
)

TASKS = {
    # Binary NLI with chain of thought: {"thought_process": str, "predicted_label": 0|1}.
    "nli": {
        "label_field": "predicted_label",
        "reasoning_field": "thought_process",
        "labels": [0, 1],
        "label_names": {"entailment": 1, "entailed": 1, "no entailment": 0, "no-entailment": 0,
                        "not entailment": 0, "non-entailment": 0, "not entailed": 0},
        "input_fields": ["premise", "hypothesis"],
        "true_label_field": "label",
    },
    # Binary NLI answered with the label only: {"predicted_label": 0|1}.
    "nli_label": {
        "label_field": "predicted_label",
        "reasoning_field": None,
        "labels": [0, 1],
        "label_names": {"entailment": 1, "entailed": 1, "no entailment": 0, "no-entailment": 0,
                        "not entailment": 0, "non-entailment": 0, "not entailed": 0},
        "input_fields": ["premise", "hypothesis"],
        "true_label_field": "label",
        "system_prompt": NLI_LABEL_SYSTEM,  # short: the prompt is most of a CPU training step's tokens
        "user_template": NLI_LABEL_USER_TEMPLATE,
    },
    # Chat-format classification with a JSON answer (hate-speech workflow).
    "hate_speech": {
        "label_field": "classification",
        "reasoning_field": "reasoning",
        "labels": ["hate_speech", "not_hate"],
        "label_names": {"hate": "hate_speech", "hatespeech": "hate_speech", "hate speech": "hate_speech",
                        "normal": "not_hate", "not hate": "not_hate", "non-hate": "not_hate"},
        "input_fields": ["text"],
        "true_label_field": "label",
        "system_prompt": HATE_SPEECH_SYSTEM,
    },
    # Free-text answers (prompt/response SFT): scored by exact match and ROUGE-L against the reference.
    "free_text": {"free_text": True, "label_field": None, "reasoning_field": None, "labels": [], "label_names": {},
                  "input_fields": [], "true_label_field": None},
}


def get_task(task) -> dict:
    """A task dict from its name (or the dict itself)."""
    if isinstance(task, dict):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def normalize_label(value, task="nli"):
    """The task's label for a raw value (int, "0"/"1", a label name), or None when it is not one."""
    spec = get_task(task)
    labels = spec["labels"]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if value in labels else None
    if isinstance(value, str):
        word = value.strip().strip(".").strip().lower()
        for label in labels:
            if word == str(label).lower():
                return label
        return spec["label_names"].get(word)
    return None


def answer_schema(task) -> dict:
    """The JSON schema of a label task's answer (for constrained decoding): the label field holding one of
    the task's labels, and the reasoning field when the task has one."""
    spec = get_task(task)
    if spec.get("free_text"):
        raise ValueError("a free-text task has no JSON answer schema")
    labels = spec["labels"]
    label_type = "integer" if all(isinstance(label, int) for label in labels) else "string"
    properties = {spec["label_field"]: {"type": label_type, "enum": list(labels)}}
    if spec["reasoning_field"]:
        properties = {spec["reasoning_field"]: {"type": "string"}, **properties}
    return {"type": "object", "properties": properties, "required": list(properties)}


def nli_user_message(premise: str, hypothesis: str, task="nli") -> str:
    template = get_task(task).get("user_template", NLI_USER_TEMPLATE)
    return template.format(premise=premise, hypothesis=hypothesis)


def nli_completion(thought_process: str | None, label: int, task="nli") -> str:
    """The answer a fine-tuned model should write: one JSON object, reasoning first (when the task has it)."""
    if get_task(task)["reasoning_field"] is None:
        return json.dumps({"predicted_label": int(label)})
    return json.dumps({"thought_process": thought_process, "predicted_label": int(label)}, ensure_ascii=False)


def hate_speech_user_message(text: str, persona: str | None = None) -> str:
    persona_line = f"Persona: {persona}\n" if persona else ""
    return f"Analyze this text for hate speech:\n\n{persona_line}Text: \"{text}\""


def confidence_user_message(example: dict) -> str:
    """A question with the context its answer was produced from (passage, options) when the data has it."""
    parts = []
    if example.get("passage"):
        parts.append(f"Passage: {example['passage']}")
    parts.append(f"Question: {example['question']}")
    options = example.get("options")
    if isinstance(options, dict):
        parts.append("Options:\n" + "\n".join(f"{key}. {value}" for key, value in sorted(options.items())))
    elif isinstance(options, list):
        parts.append("Options:\n" + "\n".join(f"{chr(65 + i)}. {value}" for i, value in enumerate(options)))
    return "\n\n".join(parts)


def example_messages(example: dict, task="nli") -> list[dict]:
    """The chat messages (without the answer) that ask the model about one raw example."""
    spec = get_task(task)
    if "text" in spec["input_fields"]:
        user = hate_speech_user_message(example["text"], example.get("persona"))
    else:
        user = nli_user_message(example["premise"], example["hypothesis"], task)
    system = [{"role": "system", "content": spec["system_prompt"]}] if spec.get("system_prompt") else []
    return system + [{"role": "user", "content": user}]


# The Mistral `[INST]` format the original project used, for tokenizers without a chat template. A
# Jinja template like any model's, so the server (scripts/serve.py passes it to vLLM) renders prompts
# exactly as training and offline inference do.
FALLBACK_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages if m['role'] == 'system' -%}"
    "{%- set ns.system = ns.system ~ ('' if loop.first else '\n\n') ~ m['content'] -%}"
    "{%- endfor -%}"
    "{{- bos_token or '' -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{{- '[INST] ' ~ ((ns.system ~ '\n\n' ~ m['content']) if ns.system else m['content']) ~ ' [/INST]' -}}"
    "{%- set ns.system = '' -%}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{- m['content'] ~ (eos_token or '') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def chat_template(tokenizer) -> str:
    """The template every prompt of this tokenizer is rendered with: its own, else the fallback."""
    return getattr(tokenizer, "chat_template", None) or FALLBACK_CHAT_TEMPLATE


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text up to where the model starts answering, through `chat_template(tokenizer)`."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(FALLBACK_CHAT_TEMPLATE)
    return template.render(messages=messages, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
                           add_generation_prompt=True)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the prompt; the rendered text already holds bos, so none is added twice."""
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]


# --- API prompts for data generation (scripts/generate_thoughts*.py, scripts/score_thoughts.py) ----------

SYSTEM_PROMPTS = {
    # The teacher writes step-by-step reasoning and a label for one premise/hypothesis pair.
    "initial_generation": (
        "You are an expert at using chain of thought reasoning to solve pairwise binary classification NLI "
        "tasks. Given a premise and hypothesis, determine whether the hypothesis can be logically inferred "
        "from the premise. Reason in at most three short steps: 1. analyse the premise for logical, factual "
        "and common-sense information; 2. analyse the hypothesis against it; 3. conclude. Label 1 means the "
        "hypothesis is entailed by the premise, 0 means it is not.\n\n"
        "Respond with only a JSON object of this form:\n"
        '{"thought_process": "Step 1. ... Step 2. ... Step 3. ...", "predicted_label": 0 or 1}'
    ),
    # A stronger model explains why a wrong chain of thought failed and writes a corrected one.
    "reflection": (
        "You are an expert in natural language inference reviewing a flawed chain of thought. You are given a "
        "premise, a hypothesis, the flawed reasoning, the label it reached and the correct label (1 = "
        "entailment, 0 = no entailment). Explain what the reasoning got wrong, then write improved step-by-step "
        "reasoning that reaches its conclusion from the premise itself (do not mention that you were told the "
        "answer).\n\nRespond with only a JSON object of this form:\n"
        '{"error_analysis": "...", "improved_thought_process": "Step 1. ... Step 2. ... Step 3. ...", '
        '"predicted_label": 0 or 1}'
    ),
    # LLM-as-judge: rate a chain of thought and improve it.
    "scoring": (
        "You are a strict grader of natural language inference reasoning. Given a premise, a hypothesis, a "
        "chain of thought and the label it reached, rate the reasoning from 1 (wrong or unsupported) to 5 "
        "(correct, concise and grounded in the premise), and write an improved version.\n\nRespond with only "
        'a JSON object of this form:\n{"score": 1-5, "judge_reasoning": "...", "improved_thought_process": "..."}'
    ),
}

THOUGHT_USER_TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}"
REFLECTION_USER_TEMPLATE = (
    "Premise: {premise}\nHypothesis: {hypothesis}\n\nFlawed reasoning: {thought_process}\n"
    "Label it reached: {predicted_label}\nCorrect label: {true_label}"
)
SCORING_USER_TEMPLATE = (
    "Premise: {premise}\nHypothesis: {hypothesis}\n\nReasoning: {thought_process}\nLabel it reached: {predicted_label}"
)
REASK_TEMPLATE = ("Your previous answer was not valid: {error}. Reply again with only the JSON object in the "
                  "required format.")
