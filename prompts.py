"""Every prompt template, the label tasks, and the one function that turns an example into model input.

Training (`train/sft_data.py`) and inference (`evaluate/sample_model.py`) both call `encode_prompt`,
so the token ids a training example starts with are exactly the ids inference feeds the model.

A *task* (`Task`) owns everything task-specific: its input fields and prompt, its labels and their
other names, the answer's JSON fields and schema, and whether it is scored by label or as free text.
A new task is one more `Task` in TASKS, not new code anywhere else.
"""

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# The words of a yes/no answer (the boolq task's labels' other names, a confidence answer's truth); the
# package's true/false flag words (nli_finetune/cli.py) build on them.
YES_WORDS, NO_WORDS = frozenset({"yes", "true"}), frozenset({"no", "false"})

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

# Step-by-step distillation (Hsieh et al. 2023, arXiv 2305.02301): the same pair under its own task prefix
# and instruction, answered with the teacher's rationale in prose. It is an auxiliary training target only:
# the distinct prompt keeps it apart from the label prompt, which inference uses unchanged.
NLI_RATIONALE_PREFIX = "[rationale]"
NLI_RATIONALE_USER_TEMPLATE = (
    NLI_RATIONALE_PREFIX + " Premise: {premise}\nHypothesis: {hypothesis}\n"
    "Explain step by step whether the hypothesis is entailed by the premise."
)

HATE_SPEECH_SYSTEM = (
    "You are an expert hate speech detection system. Analyze the given text and determine if it "
    "contains hate speech targeting protected groups (LGBTQ+, Mexican, Middle Eastern communities)."
)

@dataclass(frozen=True)
class Task:
    """Everything task-specific, in one place: adding a task is one more instance in TASKS below.

    A raw row of the task holds `input_fields` (the prompt is made from them) and a gold label in
    `true_label_field`; the answer the model writes is one JSON object: `reasoning_field` (when the task
    has one) then `label_field`. A task with no labels is free text: scored by exact match and ROUGE-L
    against the reference instead of by label."""
    name: str
    labels: tuple = ()                    # the valid labels; () = free text
    label_field: str | None = None        # the answer's label field
    reasoning_field: str | None = None    # the answer's reasoning field, written before the label; None = label only
    label_names: dict = field(default_factory=dict)  # other spellings (lower case) or booleans -> label
    input_fields: tuple = ()              # the raw row's fields the prompt reads
    true_label_field: str = "label"       # the raw row's gold label
    system_prompt: str | None = None      # the system turn, when the task has one
    user_message: Callable[[dict], str] | None = None  # raw row -> the user turn

    @property
    def free_text(self) -> bool:
        return not self.labels

    def normalize_label(self, value):
        """The task's label for a raw value (int, "0"/"1", a label name, a boolean), or None when it is not one."""
        if isinstance(value, bool):
            return self.label_names.get(value) if any(isinstance(k, bool) for k in self.label_names) else None
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            return value if value in self.labels else None
        if isinstance(value, str):
            word = value.strip().lower()
            if word.endswith(".") and not word.endswith(".."):
                word = word[:-1].rstrip()  # "1." ends a sentence; ".1" and "1..." are not labels
            if re.fullmatch(r"-?\d+\.0+", word):
                word = word[:word.index(".")]  # a CSV "1.0" reads like JSON's 1.0
            for label in self.labels:
                if word == str(label).lower():
                    return label
            return self.label_names.get(word)
        return None

    def answer_schema(self) -> dict:
        """The JSON schema of the answer (for constrained decoding): the label field holding one of the
        labels, and the reasoning field when the task has one."""
        if self.free_text:
            raise ValueError("a free-text task has no JSON answer schema")
        label_type = "integer" if all(isinstance(label, int) for label in self.labels) else "string"
        properties = {self.label_field: {"type": label_type, "enum": list(self.labels)}}
        if self.reasoning_field:
            properties = {self.reasoning_field: {"type": "string"}, **properties}
        return {"type": "object", "properties": properties, "required": list(properties)}

    def messages(self, row: dict) -> list[dict]:
        """The chat messages (without the answer) that ask the model about one raw row."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": self.user_message(row)}]

    def answer(self, label, reasoning: str | None = None) -> str:
        """The answer a fine-tuned model should write: one JSON object, reasoning first (when the task has it)."""
        if self.reasoning_field is None:
            return json.dumps({self.label_field: label}, ensure_ascii=False)
        return json.dumps({self.reasoning_field: reasoning, self.label_field: label}, ensure_ascii=False)

    def row_label(self, row: dict) -> tuple[str, object]:
        """(field, raw value) of a training row's label: the answer's field when the row carries one (a
        generated thought's label), else the gold label."""
        name = self.label_field if self.label_field in row else self.true_label_field
        return name, row.get(name)

    def row_reasoning(self, row: dict) -> tuple[str, object]:
        """(field, value) of a training row's reasoning: the reasoning field, or a reflection's improved one."""
        name = self.reasoning_field if self.reasoning_field in row else f"improved_{self.reasoning_field}"
        return name, row.get(name)


def nli_user_message(premise: str, hypothesis: str, template: str | None = None) -> str:
    return (template or NLI_USER_TEMPLATE).format(premise=premise, hypothesis=hypothesis)


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


NLI_LABEL_NAMES = {"entailment": 1, "entailed": 1, "no entailment": 0, "no-entailment": 0, "not entailment": 0,
                   "non-entailment": 0, "not entailed": 0}
TASKS = {task.name: task for task in (
    # Binary NLI with chain of thought: {"thought_process": str, "predicted_label": 0|1}.
    Task("nli", labels=(0, 1), label_field="predicted_label", reasoning_field="thought_process",
         label_names=NLI_LABEL_NAMES, input_fields=("premise", "hypothesis"),
         user_message=lambda row: nli_user_message(row["premise"], row["hypothesis"])),
    # Binary NLI answered with the label only: {"predicted_label": 0|1}; a short prompt, since the prompt
    # is most of a CPU training step's tokens.
    Task("nli_label", labels=(0, 1), label_field="predicted_label", label_names=NLI_LABEL_NAMES,
         input_fields=("premise", "hypothesis"), system_prompt=NLI_LABEL_SYSTEM,
         user_message=lambda row: nli_user_message(row["premise"], row["hypothesis"], NLI_LABEL_USER_TEMPLATE)),
    # The rationale of an NLI pair as free text (step-by-step distillation's auxiliary target, written by
    # prepare_ft_data.py --answer distill); scored as free text when evaluated at all.
    Task("nli_rationale", input_fields=("premise", "hypothesis"), true_label_field=None, system_prompt=NLI_LABEL_SYSTEM,
         user_message=lambda row: nli_user_message(row["premise"], row["hypothesis"], NLI_RATIONALE_USER_TEMPLATE)),
    # Chat-format classification with a JSON answer (hate-speech workflow; its data's "offensive" is not hate).
    Task("hate_speech", labels=("hate_speech", "not_hate"), label_field="classification", reasoning_field="reasoning",
         label_names={"hate": "hate_speech", "hatespeech": "hate_speech", "hate speech": "hate_speech",
                      "normal": "not_hate", "not hate": "not_hate", "non-hate": "not_hate", "offensive": "not_hate"},
         input_fields=("text",), system_prompt=HATE_SPEECH_SYSTEM,
         user_message=lambda row: hate_speech_user_message(row["text"], row.get("persona"))),
    # Yes/no questions as a plain classifier (the confidence data's BoolQ rows: question, correct_answer).
    Task("boolq", labels=("yes", "no"), label_field="answer", input_fields=("question",),
         true_label_field="correct_answer", label_names={True: "yes", False: "no", **dict.fromkeys(YES_WORDS, "yes"),
                                                   **dict.fromkeys(NO_WORDS, "no")},
         user_message=lambda row: f"Question: {row['question']}?\n" 'Answer {"answer": "yes"} or {"answer": "no"}.'),
    # Free-text answers (prompt/response SFT): scored by exact match and ROUGE-L against the reference.
    Task("free_text", true_label_field=None),
)}


def get_task(name: str) -> Task:
    """The task of this name: the one lookup, made where a name comes in (an option, a config, a model's
    contract, a results file's settings); code past that point is handed the `Task` itself."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


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
    return _fallback_template().render(messages=messages, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
                           add_generation_prompt=True)


@functools.cache
def _fallback_template():
    """Compiled once: compiling it took ~10 ms, paid per example (30 s of a 3,000-row dry run)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(FALLBACK_CHAT_TEMPLATE)


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
