"""Generation-based evaluation during training: accuracy, macro-F1 and parse rate on N eval examples,
with the same prompts, generation and label extraction that inference uses. Logged with the loss."""

from transformers import TrainerCallback

from evaluate.extraction import extract_label
from evaluate.generation import generate_answers
from evaluate.inputs import load_eval_items
from evaluate.metrics import classification_metrics, text_metrics
from prompts import get_task


class GenerationEvalCallback(TrainerCallback):
    def __init__(self, tokenizer, eval_path, task, n_examples, max_new_tokens, batch_size):
        self.tokenizer, self.task = tokenizer, task
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.items, _ = load_eval_items(eval_path, tokenizer, task, limit=n_examples)
        self.trainer = None  # set after the Trainer exists, so results go through trainer.log

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        was_training = model.training
        model.eval()
        results = generate_answers(model, self.tokenizer, [item.prompt_ids for item in self.items],
                                   batch_size=self.batch_size, max_new_tokens=self.max_new_tokens, progress=False,
                                   stop_at_json=not get_task(self.task).get("free_text", False))
        if was_training:
            model.train()
        stop_rate = sum(r["stop_reason"] != "length" for r in results) / len(results)
        if get_task(self.task).get("free_text"):
            metrics = text_metrics([r["text"] for r in results], [item.true_label for item in self.items])
            logged = {"eval_gen_exact_match": metrics["exact_match"], "eval_gen_rouge_l": metrics["rouge_l"],
                      "eval_gen_stop_rate": stop_rate}
        else:
            predictions = [extract_label(r["text"], self.task)[0] for r in results]
            metrics = classification_metrics([item.true_label for item in self.items], predictions,
                                             get_task(self.task)["labels"])
            logged = {"eval_gen_accuracy": metrics["accuracy"], "eval_gen_f1": metrics["f1_macro"],
                      "eval_gen_parse_rate": 1 - metrics["parse_failure_rate"], "eval_gen_stop_rate": stop_rate}
        if self.trainer is not None:
            self.trainer.log(logged)
        else:
            state.log_history.append({**logged, "step": state.global_step})
