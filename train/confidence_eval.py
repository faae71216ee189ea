"""Confidence-token validation during training: token accuracy and calibration on local validation sets.

Each evaluation writes `reliability_step_<N>.json` and `.png` in output_dir (one per step, never
overwritten), and saves the adapter to `best_accuracy/` and `best_calibration/` whenever the mean
validation accuracy rises or the mean l2 calibration error falls.
"""

from pathlib import Path

from transformers import TrainerCallback

from nli_finetune.calibration import plot_reliability
from nli_finetune.confidence_tokens import evaluate_confidence, load_items
from nli_finetune.data_io import atomic_write_json
from train.config_schema import TrainConfig


class ConfidenceEvalCallback(TrainerCallback):
    def __init__(self, tokenizer, config: TrainConfig):
        self.tokenizer, self.config = tokenizer, config
        self.output_dir = Path(config.output_dir)
        self.sets = {path: load_items(path, tokenizer, config.confidence_datasets, None,
                                      config.confidence_eval_examples) for path in config.confidence_eval_data}
        self.best_accuracy, self.best_calibration = -1.0, float("inf")
        self.trainer = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        was_training = model.training
        model.eval()
        results = {}
        for path, items in self.sets.items():
            _, metrics = evaluate_confidence(model, self.tokenizer, items, self.config.confidence_tokens,
                                             batch_size=self.config.batch_size, beta=self.config.confidence_beta)
            results[path] = metrics
        if was_training:
            model.train()
        step = state.global_step
        accuracy = sum(m["val_accuracy"] for m in results.values()) / len(results)
        l2 = sum(m["calibration"]["l2"] for m in results.values()) / len(results)
        report_path = self.output_dir / f"reliability_step_{step}.json"
        atomic_write_json(report_path, {"step": step, "val_accuracy": accuracy, "calibration_l2": l2,
                                        "sets": results})
        first = next(iter(results.values()))
        plot_reliability(first["calibration"], report_path.with_suffix(".png"), title=f"step {step}")
        for name, better in (("best_accuracy", accuracy > self.best_accuracy),
                             ("best_calibration", l2 < self.best_calibration)):
            if better:
                model.save_pretrained(self.output_dir / name)
                self.tokenizer.save_pretrained(self.output_dir / name)
        self.best_accuracy = max(self.best_accuracy, accuracy)
        self.best_calibration = min(self.best_calibration, l2)
        logged = {"eval_conf_accuracy": accuracy, "eval_conf_l2": l2,
                  "eval_conf_missing": sum(m["token_missing"] for m in results.values())}
        if self.trainer is not None:
            self.trainer.log(logged)
