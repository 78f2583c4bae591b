"""Byte-level Transformer LM on the Python standard library's own source (no download).

    python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm
    python -m scalelab.run --config experiments/lm_stdlib.py:tiny --workdir runs/lm_tiny
    python -m scalelab.run --config experiments/lm_stdlib.py:gpt2 --workdir runs/gpt2   # accelerator
"""
from scalelab.training import recipes


def get_config(arg: str = 'small'):
    return recipes.byte_lm(arg)
