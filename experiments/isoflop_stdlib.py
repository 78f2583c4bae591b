"""A compute-optimal (IsoFLOP) study of the byte-level stdlib LM: 4 budgets from 3.16e11 to
1e13 FLOPs (1.5 decades), at each the model sizes of one shape ladder whose planned tokens
per parameter lie in a window around the optimum, every run trained to its own end.

    python -m scalelab.sweep --config experiments/isoflop_stdlib.py --workdir runs/isoflop --parallel 2
    python -m scalelab.sweep --config experiments/isoflop_stdlib.py:pilot --workdir runs/isoflop_pilot --parallel 2
    python -m scalelab.sweep --config experiments/isoflop_stdlib.py:tiny --workdir runs/isoflop_tiny

The rules, the same for every run:
- data: the stdlib source in bytes, sequences of 128, batches of 16 (2,048 tokens a step); no
  run sees the 29.6 MB training split more than twice; every run is scored 8 times, evenly
  spaced, the last at its end, on the same 131,072 held-out bytes (eval_loss: the fitted loss
  at the end, and the curves of Approach 1);
- model: pre-norm Transformer (RMSNorm, RoPE, GELU), heads of 16, qk-layernorm, untied head,
  muP with base width 64; a ladder of 17 shapes (d_model 16 to 144, 1 to 8 layers, aspect
  ratio 8 to 32), 7.2k to 2.0M parameters with the head, 0.08 to 0.3 decades apart;
- which sizes run at a budget: those planned to train 15 to 2,000 tokens per parameter (about
  1 decade of N around an optimum near 170, where the 1e12 pilot put it) and >= 200 steps;
- learning rate: 10^-2.25 = 5.6e-3 for every size, the rate the muP transfer experiment found
  optimal at every width from 16 to 256 (benchmarks/results/mup_lr_transfer_long_qk_norm);
  AdamW (b2 0.95), no weight decay, gradient clipping at 1;
- schedule: linear warmup over 5% of the run's steps, then cosine to 10% of the peak at the
  run's own last step (Hoffmann et al.: a cosine longer than the run overstates its loss);
- duration: train.flops = the budget C = 6 N D (flops.FLOP_CONVENTION, N with the head).
`:pilot` runs the smallest budget over the whole ladder (where is the optimum?); `:tiny` is
the test suite's seconds-long version of the same grid.
"""
from ml_collections import ConfigDict

from scalelab.sweep import points

BUDGETS = (3.16e11, 1e12, 3.16e12, 1e13)
# (d_model, n_layers): parameter counts with head 7,248 ... 2,030,224.
LADDER = ((16, 1), (16, 2), (32, 1), (32, 2), (32, 3), (48, 2), (48, 3), (48, 4), (64, 3), (64, 4), (80, 4),
          (80, 5), (96, 5), (96, 6), (112, 6), (128, 7), (144, 8))
LEARNING_RATE = 10 ** -2.25


def model_overrides() -> dict:
    """The architecture and optimizer every point (and the verification run) shares."""
    return {
        'model.head_dim': 16, 'model.d_ff': 0, 'model.tie_embeddings': False, 'model.qk_norm': True,
        'model.parametrization': 'mup', 'model.mup_base_width': 64,
        'data.seq_len': 128, 'train.global_batch': 16, 'data.eval_tokens': 131072,
        'optim.learning_rate': round(LEARNING_RATE, 6), 'optim.warmup_fraction': 0.05,
        'optim.schedule': 'cosine', 'optim.min_lr_ratio': 0.1, 'optim.weight_decay': 0.0, 'optim.grad_clip': 1.0,
        'train.log_every': 10, 'train.evals': 8, 'checkpoint.every_steps': 1000,
    }


def ladder_counts(arg: str = 'default') -> tuple[int, ...]:
    """The with-head parameter count of each ladder shape (the sweep's target_params)."""
    from scalelab.training import config
    from scalelab import models
    from scalelab.science import shapes
    from scalelab import data as data_lib
    cfg = config.base_config('transformer', 'text')
    for key, value in model_overrides().items():
        points.set_key(cfg, key, value)
    models.resolve(cfg.model, data_lib.spec(cfg.data))
    rule = shape_rule(ConfigDict(points.default_config().shape.to_dict()))
    ladder = LADDER[:5] if arg == 'tiny' else LADDER
    return tuple(shapes.count(shapes.shape_for(cfg.model, n_layers, d_model, rule), rule)
                 for d_model, n_layers in ladder)


def shape_rule(rule: ConfigDict) -> ConfigDict:
    rule.update(aspect_ratio=16.0, head_dim=16, ff_ratio=4.0, count='with_head', tolerance=0.01)
    return rule


def get_config(arg: str = 'default'):
    variants = ('default', 'pilot', 'tiny')
    if arg not in variants:
        raise ValueError(f'experiments/isoflop_stdlib.py:{arg}: unknown variant; valid: {", ".join(variants)}')
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib.py'
    overrides = model_overrides()
    budgets = BUDGETS
    if arg == 'pilot':
        budgets = (1e12,)
        cfg.keep.update(min_steps=80, min_tokens_per_param=30.0, max_tokens_per_param=300.0)
    elif arg == 'tiny':
        budgets = (2e9, 6e9)
        overrides.update({'data.seq_len': 32, 'data.eval_tokens': 2048, 'train.log_every': 5})
        cfg.keep.update(min_steps=10, max_tokens_per_param=1e3)
    else:
        cfg.keep.update(min_tokens_per_param=10.0, max_tokens_per_param=3000.0, min_steps=200)
    cfg.overrides = ConfigDict(overrides, allow_dotted_keys=True)
    cfg.axes = ConfigDict({'train.flops': budgets, 'target_params': ladder_counts(arg)}, allow_dotted_keys=True)
    shape_rule(cfg.shape)
    cfg.fit.update(law='compute_optimal', metric='eval_loss', bootstrap=200)
    return cfg
