"""Confidence tokens: which token a model appended, whether its answer was right (by the domain's
rule), and how well p(confident) is calibrated. Shared by the offline evaluation
(`python -m evaluate.confidence`) and the training-time callback (train/confidence_eval.py).

Eval rows (local JSONL): {question, passage?, options?, correct_answer, dataset?}. For each row the
model generates an answer and a confidence token; the token is parsed (a missing token is counted, not
dropped), the answer is judged by the domain's rule (yes/no for READ / BoolQ, option letter for MED /
MedQA), the expected token is C when the answer is right and U otherwise, and validation accuracy is
the share of predicted tokens equal to the expected one. p(confident) is the two-way softmax over the
domain's C and U logits at the token position; calibration is measured on (p, answer correct).
"""

import re

import torch

from nli_finetune.calibration import calibration_report
from nli_finetune.data_io import DataError, read_records
from nli_finetune.greedy_decode import left_pad
from prompts import NO_WORDS, YES_WORDS, confidence_user_message, encode_prompt

DEFAULT_TOKENS = {"READ": ["<C_READ>", "<U_READ>"], "MED": ["<C_MED>", "<U_MED>"]}
DEFAULT_DATASETS = {"boolq": "READ", "medqa": "MED"}
RULES = {"READ": "yes_no", "MED": "option_letter"}
_YES_NO_WORD = re.compile(r"\b(" + "|".join(sorted(YES_WORDS | NO_WORDS)) + r")\b")


def judge_yes_no(answer: str, correct_answer) -> bool:
    """BoolQ: the answer's first yes/no (or true/false) word must match the correct answer."""
    truth = str(correct_answer).strip().lower()
    truth = True if truth in YES_WORDS else False if truth in NO_WORDS else None
    match = _YES_NO_WORD.search(answer.lower())
    if truth is None or match is None:
        return False
    return (match.group(1) in YES_WORDS) == truth


def judge_option_letter(answer: str, correct_answer) -> bool:
    """MedQA: the first option letter (A-E) the answer names must be the correct one."""
    match = re.search(r"(?:answer is|^|\()\s*\(?([A-E])\b", answer.strip(), re.IGNORECASE | re.MULTILINE)
    letter = match.group(1).upper() if match else None
    return letter is not None and letter == str(correct_answer).strip().strip("()").upper()[:1]


JUDGES = {"yes_no": judge_yes_no, "option_letter": judge_option_letter}
# What a correct answer may be under each rule: anything else would be scored "wrong" for every answer.
ANSWER_FORMS = {"yes_no": ("yes, no, true or false", lambda truth: truth.lower() in YES_WORDS | NO_WORDS),
                "option_letter": ("an option letter A-E", lambda truth: truth.strip("()")[:1].upper() in tuple("ABCDE"))}


def two_way_p(logits: torch.Tensor, c_id: int, u_id: int) -> float:
    """p(confident): softmax over just the domain's C and U logits."""
    pair = torch.stack([logits[c_id], logits[u_id]]).float()
    return torch.softmax(pair, dim=0)[0].item()


def load_items(path, tokenizer, datasets: dict, default_domain: str | None, limit: int | None = None) -> list[dict]:
    items = []
    for record in read_records(path)[:limit]:
        where = f"{path}: row {record.get('_line', '?')}"
        if not str(record.get("question") or "").strip():
            raise DataError(f"{where}: missing field 'question'")
        if record.get("correct_answer") in (None, ""):
            raise DataError(f"{where}: missing field 'correct_answer'")
        domain = datasets.get(str(record.get("dataset", "")).lower(), default_domain)
        if domain is None:
            raise DataError(f"{where}: field 'dataset': {record.get('dataset')!r} maps to no domain; pass --domain")
        form, valid = ANSWER_FORMS[RULES.get(domain, "yes_no")]
        if not valid(str(record["correct_answer"]).strip()):
            raise DataError(f"{where}: field 'correct_answer': {record['correct_answer']!r} is not {form} "
                            f"(the {domain} domain's rule)"[:300])
        prompt = encode_prompt(tokenizer, [{"role": "user", "content": confidence_user_message(record)}])
        items.append({"id": str(record.get("id", record.get("_line"))), "prompt_ids": prompt, "domain": domain,
                      "correct_answer": record["correct_answer"]})
    return items


def check_confidence_tokens(tokenizer, tokens: dict, model_id: str, all_items: dict) -> None:
    """A model trained without the confidence tokens would score p = 0.5 everywhere: refuse it."""
    vocab = tokenizer.get_vocab()
    for path, items in all_items.items():
        if not items:
            raise DataError(f"{path}: no rows")
        domains = sorted({item["domain"] for item in items})
        missing = [t for domain in domains for t in tokens.get(domain, [f"<C_{domain}>", f"<U_{domain}>"])
                   if t not in vocab]
        if missing:
            raise DataError(f"{model_id}: the tokenizer has no confidence token {', '.join(missing)} (needed by "
                            f"{path}); was it trained with confidence_tokens? (train/configs/confidence.py)")


@torch.inference_mode()
def evaluate_confidence(model, tokenizer, items: list[dict], tokens: dict, *, batch_size: int = 8,
                        max_new_tokens: int = 64, beta: int = 100) -> tuple[list[dict], dict]:
    """(per-example records, metrics) for confidence-token validation."""
    records = []
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        input_ids, mask = left_pad([item["prompt_ids"] for item in batch], pad)
        width = input_ids.shape[1]
        out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                             do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                             output_logits=True, return_dict_in_generate=True)
        for row, item in enumerate(batch):
            c_token, u_token = tokens[item["domain"]]
            c_id, u_id = tokenizer.convert_tokens_to_ids(c_token), tokenizer.convert_tokens_to_ids(u_token)
            generated = out.sequences[row, width:].tolist()
            position = next((k for k, t in enumerate(generated) if t in (c_id, u_id)), None)
            end = generated.index(eos) if eos in generated else len(generated)
            answer_ids = generated[:position if position is not None else end]
            step = position if position is not None else min(end, len(out.logits) - 1)
            p_confident = two_way_p(out.logits[step][row], c_id, u_id)
            predicted = None if position is None else ("C" if generated[position] == c_id else "U")
            correct = JUDGES[RULES.get(item["domain"], "yes_no")](
                tokenizer.decode(answer_ids, skip_special_tokens=True), item["correct_answer"])
            expected = "C" if correct else "U"
            records.append({"id": item["id"], "domain": item["domain"],
                            "answer": tokenizer.decode(answer_ids, skip_special_tokens=True),
                            "predicted_token": predicted, "expected_token": expected, "answer_correct": correct,
                            "token_correct": predicted == expected, "p_confident": p_confident})
    n = len(records)
    report = calibration_report([r["p_confident"] for r in records], [r["answer_correct"] for r in records], beta)
    metrics = {"n": n, "token_missing": sum(r["predicted_token"] is None for r in records),
               "val_accuracy": sum(r["token_correct"] for r in records) / n,
               "answer_accuracy": sum(r["answer_correct"] for r in records) / n,
               "mean_p_confident": sum(r["p_confident"] for r in records) / n, "calibration": report}
    return records, metrics
