"""Fixtures that tests and benchmarks share (`tests/` and `bench/` import them; nothing else does):
a local OpenAI-compatible chat server and a LoRA adapter with random weights."""
