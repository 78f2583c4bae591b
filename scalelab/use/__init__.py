"""Using trained models: a workdir's model for generation, scoring, translation and export.

inference (a language model from a workdir), generate (sampling with a KV cache),
evaluate (scoring a workdir on text or a corpus), translate (translating a workdir's
sentences), hf (GPT-2 to and from transformers), export (safetensors).
"""
