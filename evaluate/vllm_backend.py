"""vLLM generation backend for sample_model.py (`--backend vllm`), a GPU dependency imported lazily.

A LoRA adapter dir is served through vLLM's LoRA support on its base model, with the adapter's rank
rounded up to a value vLLM accepts as the max LoRA rank (vllm_lora.py, as scripts/serve.py does).
Prompts are the same token ids the HF backend uses, the dtype is resolved the same way (float32 on a
CPU, where vLLM would pick bfloat16), decoding is greedy, and with `stop_at_json` an answer is cut where
it closes its JSON object, as the HF backend stops there: so both backends give the same records
(tests/test_vllm.py, run by `make test-vllm`). `VllmBackend` is sample_model's backend
(inference_run.Backend) over the engine `VllmGenerator`, which works on token ids.
"""

from evaluate.backend import cannot_score
from nli_finetune.cli import on_terminal
from nli_finetune.generation import JsonCloseTracker, answer_record
from nli_finetune.modeling import ModelLoadError, adapter_base, load_tokenizer, resolve_model_dir
from nli_finetune.vllm_lora import LoraRankError, adapter_max_lora_rank, vllm_dtype

INSTALL_HINT = ("vLLM is not installed in this Python: it lives in an environment of its own, which "
                "`./run_inference.sh --backend vllm` picks for you (/opt/vllm-venv in the Docker image, "
                ".venv-vllm on the host, built by `make test-vllm` with vLLM's CPU build); or run "
                "sample_model.py with that environment's python")


class VllmGenerator:
    def __init__(self, model_id: str, base_model: str | None = None, json_schema: dict | None = None,
                 chunk_size: int = 256, dtype: str = "auto"):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelLoadError(INSTALL_HINT) from exc
        dtype = vllm_dtype(dtype)
        self.tokenizer = load_tokenizer(model_id)
        base = base_model or adapter_base(model_id)
        base = resolve_model_dir(base) if base else None
        model_id = resolve_model_dir(model_id)
        self.lora_request = None
        kwargs = {}
        if base:
            from vllm.lora.request import LoRARequest
            try:
                rank = adapter_max_lora_rank(model_id)  # the value vLLM accepts, as scripts/serve.py passes
            except LoraRankError as exc:
                raise ModelLoadError(str(exc)) from exc
            kwargs = {"enable_lora": True, "max_lora_rank": rank}
            self.lora_request = LoRARequest("adapter", 1, str(model_id))
        self.llm = LLM(model=base or model_id, tokenizer=model_id, dtype=dtype, **kwargs)
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
            outputs = self.llm.generate(chunk, params, lora_request=self.lora_request, use_tqdm=on_terminal())
            finished = []
            for offset, output in enumerate(outputs):
                result = self._result(output.outputs[0], stop_at_json)
                results.append(result)
                finished.append((start + offset, result))
            if on_batch:
                on_batch(finished)
        return results

    def close(self):
        """Stop vLLM's engine processes now, not at interpreter exit (where their last log lines meet
        closed streams)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def _result(self, completion, stop_at_json: bool) -> dict:
        """The record fields the HF backend gives: eos not counted, the answer cut at its JSON close."""
        ids = list(completion.token_ids)
        eos = self.tokenizer.eos_token_id
        reason = "eos" if completion.finish_reason == "stop" else "length"
        if eos in ids:
            ids, reason = ids[:ids.index(eos)], "eos"
        if stop_at_json:
            tracker = JsonCloseTracker(self.tokenizer)
            closed = next((i for i, token in enumerate(ids) if tracker.feed(0, token)), None)
            if closed is not None:
                ids, reason = ids[:closed + 1], "json"
        return answer_record(self.tokenizer, ids, reason)


class VllmBackend:
    context_length = None  # not read from vLLM's engine: the warning on prompts past the context is the HF backend's
    loaded = None          # vLLM's own log says what it loaded

    def __init__(self, run):
        self.run = run
        self.engine = VllmGenerator(run.model_id, base_model=run.base_model, dtype=run.dtype,
                                    json_schema=run.task.answer_schema() if run.json_schema else None)
        self.tokenizer = self.engine.tokenizer

    def generate(self, items: list, on_batch) -> None:
        self.engine.generate([item.prompt_ids for item in items], max_new_tokens=self.run.max_new_tokens,
                             on_batch=on_batch, stop_at_json=self.run.stop_at_json)

    def score(self, items: list, on_batch) -> None:
        cannot_score()

    def close(self) -> None:
        self.engine.close()
