"""Chat-format classification data (system/user/assistant messages) from a unified hate-speech data set.

    python scripts/prepare_finetuning_data.py --unified_dir data/processed/unified   # -> data/hate/prepared/ (hate_speech.py)
    python scripts/prepare_finetuning_data.py --unified_dir DIR --data_output_dir OUT --include_test \
        --prompt_template data/prompt_templates/hate_speech.json --strategy policy_grounded

Reads unified_train.json, unified_val.json (and unified_test.json with --include_test) from DIR: JSON
arrays of records {text, label_binary, target_group_norm, persona_tag, rationale_text, split, ...}. From
each file it keeps the records whose `split` matches the file's role (train / val / test); when none
match it warns and uses them all. Records with an empty text are skipped with a warning naming their rows. It writes train.jsonl and validation.jsonl (and test.jsonl) in the
simple format and, unless --simple_only, train_optimized.jsonl etc. with the prompts of a named strategy
from the template JSON (an unknown strategy warns and writes the simple format only). The assistant
content is valid JSON: {"classification", "confidence", "reasoning", "protected_group"}.
"""

import argparse
import json
import sys
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser
from nli_finetune.data_io import DataError, atomic_write_jsonl, check_outputs, read_records
from nli_finetune.redaction import redact
from prompts import TASKS

ROLES = {"train": ("unified_train.json", {"train"}), "validation": ("unified_val.json", {"val", "validation"}),
         "test": ("unified_test.json", {"test"})}
HATE = TASKS["hate_speech"]  # its labels, their other names ("normal", "offensive"), prompt and answer field


def assistant_answer(record: dict, where: str) -> str:
    label = HATE.normalize_label(str(record.get("label_binary", "")))
    if label is None:
        raise DataError(f"{where}: field 'label_binary': {record.get('label_binary')!r} is not hate or normal")
    group = record.get("target_group_norm") or None
    if label == "hate_speech":
        rationale = record.get("rationale_text")
        reasoning = (f"The text attacks the {group or 'targeted'} community"
                     + (f"; the key words are: {rationale}." if rationale else "."))
    else:
        reasoning = "The text does not attack or demean a protected group."
    answer = {"classification": label, "confidence": "high" if record.get("rationale_text") or label == "not_hate"
              else "medium", "reasoning": reasoning, "protected_group": group if label == "hate_speech" else None}
    return json.dumps(answer, ensure_ascii=False)


def simple_messages(record: dict, answer: str) -> list[dict]:
    return HATE.messages({"text": record["text"], "persona": record.get("persona_tag")}) + [
        {"role": "assistant", "content": answer}]


def strategy_messages(record: dict, answer: str, strategy: dict, name: str) -> list[dict]:
    fields = {"text": record["text"], "persona": record.get("persona_tag") or "unknown",
              "target_group": record.get("target_group_norm") or "unknown"}
    try:
        user = strategy["user_template"].format(**fields)
        system = strategy["system_prompt"]
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"strategy '{name}': its user_template or system_prompt is not usable "
                        f"({type(exc).__name__}: {exc}); literal braces must be doubled ({{{{ }}}}) and the "
                        "placeholders are {text}, {persona}, {target_group}") from exc
    return [{"role": "system", "content": system}, {"role": "user", "content": user},
            {"role": "assistant", "content": answer}]


def records_for(role: str, unified_dir: Path) -> list[dict]:
    file_name, wanted = ROLES[role]
    path = unified_dir / file_name
    records = read_records(path)
    kept = [r for r in records if str(r.get("split", "")).lower() in wanted]
    if not kept:
        print(f"warning: {path}: no record has split {'/'.join(sorted(wanted))}; using all {len(records)}",
              file=sys.stderr)
        kept = records
    empty = [r.get("_line", "?") for r in kept if not str(r.get("text") or "").strip()]
    if empty:  # nothing to classify: leave them out, and say which
        print(f"warning: {path}: skipped {len(empty)} record(s) with an empty 'text' (rows "
              f"{', '.join(map(str, empty[:10]))})", file=sys.stderr)
    return [r for r in kept if str(r.get("text") or "").strip()]


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unified_dir", default="./data/processed/unified")
    p.add_argument("--data_output_dir", default="data/hate/prepared", help="the folder train/configs/hate_speech.py reads")
    p.add_argument("--include_test", action="store_true")
    p.add_argument("--simple_only", action="store_true")
    p.add_argument("--prompt_template", default=str(REPO_ROOT / "data/prompt_templates/hate_speech.json"))
    p.add_argument("--strategy", default="policy_grounded")
    args = p.parse_args(argv)
    unified, out = Path(args.unified_dir), Path(args.data_output_dir)
    strategy = None
    if not args.simple_only:
        try:
            strategies = json.loads(Path(args.prompt_template).read_text())["strategies"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            print(f"error: {args.prompt_template}: cannot read prompt strategies: {exc}", file=sys.stderr)
            return 2
        strategy = strategies.get(args.strategy)
        if strategy is None:
            print(f"warning: unknown strategy '{args.strategy}' (available: {', '.join(sorted(strategies))}); "
                  "writing the simple format only", file=sys.stderr)
    roles = ["train", "validation"] + (["test"] if args.include_test else [])
    outputs = {f"{role}.jsonl": out / f"{role}.jsonl" for role in roles}
    if strategy:
        outputs.update({f"{role}_optimized.jsonl": out / f"{role}_optimized.jsonl" for role in roles})
    try:
        check_outputs({ROLES[role][0]: unified / ROLES[role][0] for role in roles} | {"--prompt_template": args.prompt_template},
                      outputs)
        files, counts = {}, []  # every file's rows are built before the first is written: all or nothing
        for role in roles:
            rows = records_for(role, unified)
            answers = [assistant_answer(r, f"{unified / ROLES[role][0]}: row {r.get('_line', '?')}") for r in rows]
            files[f"{role}.jsonl"] = [{"messages": simple_messages(r, a)} for r, a in zip(rows, answers)]
            if strategy:
                files[f"{role}_optimized.jsonl"] = [{"messages": strategy_messages(r, a, strategy, args.strategy)}
                                                    for r, a in zip(rows, answers)]
            hate = sum(json.loads(a)["classification"] == "hate_speech" for a in answers)
            counts.append(f"{role} {len(rows)} ({hate} hate_speech)")
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    for name, rows in files.items():
        atomic_write_jsonl(outputs[name], rows)
    print(f"prepare_finetuning_data: {', '.join(counts)} -> {out}"
          + (f" (simple + optimized '{args.strategy}')" if strategy else " (simple)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
