"""Generation-based evaluation during training: the offline metrics (results.summarize: accuracy,
macro-F1, parse, single-JSON and stop rates; exact match and ROUGE-L for free text) on N eval examples,
with the same prompts, generation and label extraction that inference uses. Logged with the loss.

Label tasks also log the labels scored with probabilities (label_scoring.py, as `sample_model --scoring
logprob`): eval_gen_scored_accuracy and eval_gen_ece. It costs one forward pass per example (after the
generated reasoning, for chain-of-thought tasks), little next to generating."""

from transformers import TrainerCallback

from nli_finetune.eval_inputs import load_eval_items
from nli_finetune.generation import generate_answers
from nli_finetune.label_scoring import reasoning_of, score_labels
from nli_finetune.metrics import probability_metrics
from nli_finetune.results import best_label, score_record, summarize
from prompts import Task

LOGGED = {"accuracy": "accuracy", "f1_macro": "f1", "parse_rate": "parse_rate", "single_json_rate": "single_json_rate",
          "stop_rate": "stop_rate", "exact_match": "exact_match", "rouge_l": "rouge_l"}


class GenerationEvalCallback(TrainerCallback):
    def __init__(self, tokenizer, eval_path, task: Task, n_examples, max_new_tokens, batch_size):
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
                                   stop_at_json=not self.task.free_text)
        scored = None if self.task.free_text else self.scored_metrics(model, results)
        if was_training:
            model.train()
        records = [score_record(item, result, self.task) for item, result in zip(self.items, results)]
        metrics = summarize(records, self.task, has_labels=True)
        logged = {f"eval_gen_{short}": metrics[name] for name, short in LOGGED.items() if name in metrics}
        if scored is not None:
            logged |= {"eval_gen_scored_accuracy": scored["accuracy"], "eval_gen_ece": scored["ece"]}
        if self.trainer is not None:
            self.trainer.log(logged)
        else:
            state.log_history.append({**logged, "step": state.global_step})

    def scored_metrics(self, model, results: list[dict]) -> dict:
        """Accuracy and ECE of the labels scored after each prompt (and after its generated reasoning)."""
        task = self.task
        probs = []
        for start in range(0, len(self.items), self.batch_size):
            batch = range(start, min(start + self.batch_size, len(self.items)))
            reasonings = [reasoning_of(results[i]["text"], task) for i in batch] if task.reasoning_field else None
            probs += score_labels(model, self.tokenizer, [self.items[i].prompt_ids for i in batch], task, reasonings)
        truth = [item.true_label for item in self.items]
        predicted = [best_label(task, p) for p in probs]
        accuracy = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
        return {"accuracy": accuracy, **probability_metrics(truth, probs, list(task.labels))}
