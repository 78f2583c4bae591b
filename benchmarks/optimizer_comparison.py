"""A fair optimizer comparison at equal tokens: each optimizer tuned over its learning rate,
then three seeds at its best rate.

    python benchmarks/optimizer_comparison.py [--steps 600] [--out benchmarks/results/optimizers]

The byte-level LM `experiments/lm_stdlib.py:tiny` (115,008 parameters), batch 16 x 64
bytes, a cosine to 10% after a 5% warmup (constant after it for schedule-free), every
optimizer's other settings at scalelab's defaults. For each: four learning rates around
its usual scale (Lion's a tenth of AdamW's, Adafactor's relative steps ten times), the
best by final evaluation loss, two more seeds there; the table holds the best loss (mean
and spread of the three seeds), the best rate, the LR sensitivity over the four rates
(lr_laws.lr_sensitivity: mean over rates of min(loss, initial loss) minus the best), the
step time and the optimizer state's bytes. Workdirs under --runs (kept: a rerun trains
only what is missing); results.json and optimizers.png.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GRIDS = {  # learning rates tried, each optimizer around its own scale
    'adamw': (1e-3, 3e-3, 1e-2, 3e-2),
    'lion': (1e-4, 3e-4, 1e-3, 3e-3),
    'adafactor': (1e-2, 3e-2, 1e-1, 3e-1),
    'muon': (1e-3, 3e-3, 1e-2, 3e-2),
    'schedule_free_adamw': (1e-3, 3e-3, 1e-2, 3e-2),
}


def config(name: str, lr: float, steps: int, seed: int):
    from scalelab.training import recipes
    cfg = recipes.byte_lm('tiny')
    cfg.seed = seed
    cfg.train.update(steps=steps, log_every=50, eval_every=0)
    cfg.data.eval_tokens = 65536
    cfg.optim.update(name=name, learning_rate=lr, warmup_fraction=0.05, warmup_steps=0,
                     schedule='constant' if name == 'schedule_free_adamw' else 'cosine')
    cfg.checkpoint.every_steps = steps
    return cfg


def main() -> int:
    from harness import experiment_parser, experiment_setup
    p = experiment_parser(__doc__, 'optimizers')
    p.add_argument('--steps', type=int, default=600)
    args = p.parse_args()
    runs, out, one = experiment_setup(args)
    import math

    from scalelab.core import files
    from scalelab.sweep import lr_laws
    from scalelab.training import loop

    def run(name, lr, seed):
        return loop.run(config(name, lr, args.steps, seed), runs / f'{name}_lr{lr:g}_s{seed}', devices=one)

    table = []
    for name, grid in GRIDS.items():
        swept = {lr: run(name, lr, 0) for lr in grid}
        rows = [{'status': s['status'], 'model.d_model': '64', 'optim.learning_rate': str(lr), 'optim.name': name,
                 'loss': str(s.get('eval_loss', '')), 'uniform_loss': str(math.log(256))} for lr, s in swept.items()]
        sensitivity = lr_laws.lr_sensitivity(rows)['variants'][f'name={name}']['64']
        best_lr = sensitivity['best_lr']
        seeds = [swept[best_lr]] + [run(name, best_lr, seed) for seed in (1, 2)]
        losses = [s['eval_loss'] for s in seeds]
        table.append({
            'optimizer': name, 'best_lr': best_lr, 'grid': list(grid),
            'losses_by_lr': {str(lr): s.get('eval_loss') for lr, s in swept.items()},
            'best_loss_mean': statistics.mean(losses), 'best_loss_sd': statistics.stdev(losses), 'seed_losses': losses,
            'lr_sensitivity': sensitivity['lr_sensitivity'], 'diverged_lrs': sensitivity['diverged_lrs'],
            'tokens_per_s': statistics.median(s['tokens_per_s'] for s in seeds),
            'optimizer_state_bytes': seeds[0]['optimizer_state_bytes'],
            'params': seeds[0]['params']['total'],
        })
        row = table[-1]
        print(f'{name:>20}: best lr {best_lr:g}, loss {row["best_loss_mean"]:.4f} +- {row["best_loss_sd"]:.4f} '
              f'(3 seeds), LR sensitivity {row["lr_sensitivity"]:.3f}, {row["tokens_per_s"]:,.0f} tokens/s, '
              f'state {row["optimizer_state_bytes"] / 1e6:.2f} MB', flush=True)
    files.write_json(out / 'results.json', {'model': 'experiments/lm_stdlib.py:tiny', 'steps': args.steps,
                                            'tokens': args.steps * 16 * 64, 'optimizers': table})
    plot(table, out / 'optimizers.png')
    print(f'wrote {out / "results.json"} and {out / "optimizers.png"}')
    return 0


def plot(table: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for row in table:
        lrs = [float(lr) for lr in row['losses_by_lr']]
        ax.plot(lrs, [v if v is not None else float('nan') for v in row['losses_by_lr'].values()], 'o-',
                label=f'{row["optimizer"]} (best {row["best_loss_mean"]:.3f})')
    ax.set(xscale='log', xlabel='peak learning rate', ylabel='final evaluation loss (nats/byte)',
           title='equal tokens, each optimizer over its learning rate (seed 0)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    sys.exit(main())
