"""Config fragments that experiment files share."""
from __future__ import annotations

from ml_collections import ConfigDict

from scalelab.data import images
from scalelab.models import transformer
from scalelab.training import config


def image_classification(model: str, dataset: str):
    """Data, batch, optimizer, and evaluation over the whole test split, for an
    image experiment on `dataset` (fashion_mnist or digits)."""
    if dataset not in images.DATASETS:
        raise ValueError(f':{dataset}: unknown dataset; valid: {", ".join(images.DATASETS)}')
    cfg = config.base_config(model, 'images')
    cfg.data.dataset = dataset
    cfg.train.update(global_batch=128, log_every=50, eval_every=500)  # evaluation: the whole test split
    cfg.optim.update(name='adamw', learning_rate=1e-3, warmup_steps=100, weight_decay=1e-4, schedule='cosine')
    cfg.checkpoint.every_steps = 500
    return cfg


GPT2_ARCHITECTURE = dict(transformer.GPT2_OPTIONS, tie_embeddings=True, dropout=0.0)

BYTE_LM_SIZES = {
    # name: (d_model, n_layers, n_heads, seq_len, global_batch, steps)
    'tiny': (64, 2, 2, 64, 16, 200),
    'small': (128, 4, 4, 128, 32, 400),
}


def byte_lm(size: str, corpus: str = '') -> ConfigDict:
    """A byte-level Transformer LM on the stdlib source, or the same model on a
    prepared `corpus` directory (any tokenizer); `gpt2` is GPT-2 small's
    architecture exactly (124M parameters with GPT-2's 50257-token vocabulary)."""
    cfg = config.base_config('transformer', 'corpus' if corpus else 'text')
    if corpus:
        cfg.data.path = corpus
    if size == 'gpt2':
        cfg.model.update(d_model=768, n_layers=12, n_heads=12, max_len=1024, **GPT2_ARCHITECTURE)
        cfg.data.seq_len, cfg.train.global_batch, cfg.train.steps = 1024, 32, 2000
        cfg.train.compute_dtype = 'bfloat16'
        cfg.optim.update(learning_rate=6e-4, warmup_steps=200)
        return cfg
    if size == 'gpt2_mini':  # GPT-2's architecture at a size a CPU trains in minutes
        cfg.model.update(d_model=128, n_layers=4, n_heads=4, max_len=128, **GPT2_ARCHITECTURE)
        cfg.data.seq_len = 128
        cfg.train.update(global_batch=16, steps=300, log_every=20, eval_every=100)
        cfg.data.eval_tokens = 65536
        cfg.optim.update(learning_rate=3e-3, warmup_steps=15, schedule='cosine', weight_decay=0.1)
        return cfg
    if size not in BYTE_LM_SIZES:
        raise ValueError(f':{size}: unknown size; valid: {", ".join([*BYTE_LM_SIZES, "gpt2", "gpt2_mini"])}')
    d_model, n_layers, n_heads, seq_len, batch, steps = BYTE_LM_SIZES[size]
    cfg.model.update(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    cfg.data.seq_len = seq_len
    cfg.train.update(global_batch=batch, steps=steps, log_every=20, eval_every=200)
    if size == 'tiny':  # seconds, also on several processes, where each evaluation batch is a collective
        cfg.data.eval_tokens = 16384
    cfg.optim.update(learning_rate=3e-3, warmup_steps=steps // 20, schedule='cosine', weight_decay=0.1)
    cfg.checkpoint.every_steps = 200
    return cfg
