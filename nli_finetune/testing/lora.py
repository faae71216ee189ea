"""A LoRA adapter with random, non-zero weights, for tests and benchmarks that need an adapter which changes
what a model writes (a freshly initialised LoRA's B matrix is zero, so it changes nothing)."""


def random_lora(base, out):
    """Save a rank-8 adapter over `base` (a model folder) with random weights, and its tokenizer, in `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
