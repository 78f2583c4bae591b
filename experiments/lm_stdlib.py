"""Byte-level Transformer LM on the Python standard library's own source (no download).

    python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm
    python -m scalelab.run --config experiments/lm_stdlib.py:tiny --workdir runs/lm_tiny
    python -m scalelab.run --config experiments/lm_stdlib.py:gpt2 --workdir runs/gpt2   # accelerator
"""
from scalelab import config

SIZES = {
    # name: (d_model, n_layers, n_heads, seq_len, global_batch, steps)
    'tiny': (64, 2, 2, 64, 16, 200),
    'small': (128, 4, 4, 128, 32, 400),
}


def get_config(arg: str = 'small'):
    cfg = config.base_config('transformer')
    if arg == 'gpt2':  # GPT-2 small exactly (124M with its 50257-token vocabulary)
        cfg.model.update(d_model=768, n_layers=12, n_heads=12, norm='layernorm', mlp='gelu',
                         position='learned', max_len=1024, tie_embeddings=True, use_bias=True,
                         dropout=0.0)
        cfg.data.seq_len, cfg.train.global_batch, cfg.train.steps = 1024, 32, 2000
        cfg.train.compute_dtype = 'bfloat16'
        cfg.optim.update(learning_rate=6e-4, warmup_steps=200)
        return cfg
    if arg not in SIZES:
        raise ValueError(f'experiments/lm_stdlib.py:{arg}: unknown size; valid: {", ".join([*SIZES, "gpt2"])}')
    d_model, n_layers, n_heads, seq_len, batch, steps = SIZES[arg]
    cfg.model.update(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    cfg.data.seq_len = seq_len
    cfg.train.update(global_batch=batch, steps=steps, log_every=20, eval_every=200, eval_batches=8)
    cfg.optim.update(learning_rate=3e-3, warmup_steps=steps // 20, schedule='cosine', weight_decay=0.1)
    cfg.checkpoint.every_steps = 200
    return cfg
