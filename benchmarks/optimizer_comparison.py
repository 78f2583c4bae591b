"""A fair optimizer comparison at equal tokens: each optimizer tuned over its learning rate
until the best rate is bracketed, then over its one main knob, then three seeds at the best.

    python benchmarks/optimizer_comparison.py                 # the default model, lm_stdlib.py (small)
    python benchmarks/optimizer_comparison.py --size tiny --steps 600 --runs runs/optimizers_tiny \
        --out benchmarks/results/optimizers/tiny

The byte-level LM `experiments/lm_stdlib.py` as it trains by default (820,352 parameters,
400 steps of 32 x 128 bytes, a cosine to 10% after a 5% warmup; schedule-free: constant
after it), every setting but the one tuned at scalelab's defaults. Learning rates lie on
the ladder 1, 3, 10, 30, ... x 10^-k: each optimizer starts with three rungs around its
usual scale and adds rungs until its best rate has a neighbour on both sides. At the best
rate its main knob (KNOBS) is tried at one other value, kept if it is better; then two
more seeds there. The table holds the best loss (mean and spread of three seeds), the best
rate, the LR sensitivity over the best rung and its two neighbours (lr_laws.lr_sensitivity:
mean of min(loss, initial loss) minus the best), the optimizer state's bytes, and the step
time of each optimizer's best configuration, the programs timed in turn so that a drift in
the machine's speed falls on all alike. Workdirs under --runs (kept: a rerun trains only
what is missing); results.json and optimizers.png under --out.
"""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = {  # the first grid's middle rung: each optimizer's usual scale
    'adamw': 3e-3, 'lion': 1e-3, 'adafactor': 3e-1, 'muon': 3e-2, 'schedule_free_adamw': 1e-2}
KNOBS = {  # the one main knob besides the rate, and the other value tried (the first is scalelab's default)
    'adamw': ('b2', 0.99), 'lion': ('b2', 0.99), 'adafactor': ('weight_decay', 0.0),
    'muon': ('momentum', 0.95), 'schedule_free_adamw': ('b1', 0.95)}
MAX_RUNGS = 7


def rung_lr(k: int) -> float:
    """The learning-rate ladder: rung 2e is 10^e, rung 2e + 1 is 3 x 10^e."""
    return float(f'{(1, 3)[k % 2]}e{k // 2}')


def lr_rung(lr: float) -> int:
    e = math.floor(math.log10(lr) + 1e-9)
    return 2 * e + (lr / 10 ** e > 2)


def config(size: str, name: str, lr: float, steps: int | None, seed: int, knob: dict):
    from scalelab.training import recipes
    cfg = recipes.byte_lm(size)
    cfg.seed = seed
    if steps:
        cfg.train.steps = steps
    cfg.train.update(log_every=50, eval_every=0)
    cfg.optim.update(name=name, learning_rate=lr, warmup_fraction=0.05, warmup_steps=0,
                     schedule='constant' if name == 'schedule_free_adamw' else 'cosine', **knob)
    cfg.checkpoint.every_steps = cfg.train.steps
    return cfg


def main() -> int:
    from harness import experiment_parser, experiment_setup, train
    p = experiment_parser(__doc__, 'optimizers')
    p.add_argument('--size', default='small', choices=['tiny', 'small'], help='lm_stdlib.py size')
    p.add_argument('--steps', type=int, default=None, help='training steps (default: the size\'s own)')
    p.add_argument('--timed-steps', type=int, default=20, help='steps timed per optimizer, in turn')
    args = p.parse_args()
    runs, out, one = experiment_setup(args)

    from scalelab.core import files
    from scalelab.sweep import lr_laws
    from step_throughput import CompiledStep, measure_alternating

    def run(name, lr, seed=0, knob=None):
        knob = knob or {}
        tag = ''.join(f'_{k}{v:g}' for k, v in knob.items())
        return train(config(args.size, name, lr, args.steps, seed, knob),
                     runs / f'{name}_lr{lr:g}{tag}_s{seed}', one)

    def loss(summary):
        value = summary.get('eval_loss')
        return value if summary['status'] == 'completed' and value is not None and math.isfinite(value) else math.inf

    table, chosen = [], []  # chosen: (name, rate, knob) of each optimizer's best configuration
    for name, start in START.items():
        k0 = lr_rung(start)
        swept = {k: run(name, rung_lr(k)) for k in (k0 - 1, k0, k0 + 1)}
        while len(swept) < MAX_RUNGS:  # add rungs until the best has a neighbour on each side
            best = min(swept, key=lambda k: loss(swept[k]))
            edge = best - 1 if best == min(swept) else best + 1 if best == max(swept) else None
            if edge is None:
                break
            swept[edge] = run(name, rung_lr(edge))
        best = min(swept, key=lambda k: loss(swept[k]))
        bracketed = min(swept) < best < max(swept)
        key, other = KNOBS[name]
        knob_run = run(name, rung_lr(best), knob={key: other})
        knob = {key: other} if loss(knob_run) < loss(swept[best]) else {}
        first = knob_run if knob else swept[best]
        seeds = [first] + [run(name, rung_lr(best), seed, knob) for seed in (1, 2)]
        chosen.append((name, rung_lr(best), knob))
        near = [k for k in (best - 1, best, best + 1) if k in swept]
        rows = [{'status': swept[k]['status'], 'model.d_model': '0', 'optim.learning_rate': str(rung_lr(k)),
                 'loss': str(swept[k].get('eval_loss', '')), 'uniform_loss': str(math.log(256))} for k in near]
        sensitivity = lr_laws.lr_sensitivity(rows)['variants']['all']['0']
        losses = [loss(s) for s in seeds]
        table.append({
            'optimizer': name, 'best_lr': rung_lr(best), 'bracketed': bracketed,
            'losses_by_lr': {f'{rung_lr(k):g}': swept[k].get('eval_loss') for k in sorted(swept)},
            'knob': {'key': f'optim.{key}', 'tried': other, 'loss': knob_run.get('eval_loss'), 'kept': bool(knob)},
            'best_loss_mean': statistics.mean(losses), 'best_loss_sd': statistics.stdev(losses),
            'seed_losses': losses, 'lr_sensitivity': sensitivity['lr_sensitivity'],
            'diverged_lrs': sensitivity['diverged_lrs'],
            'optimizer_state_bytes': seeds[0]['optimizer_state_bytes'], 'params': seeds[0]['params']['total'],
            'config': {'optim.learning_rate': rung_lr(best), **{f'optim.{k}': v for k, v in knob.items()}},
        })
        row = table[-1]
        print(f'{name:>20}: best lr {row["best_lr"]:g}{"" if bracketed else " (grid edge)"}, '
              f'{key} {other:g} {"kept" if knob else "not kept"} ({row["knob"]["loss"]:.4f}), '
              f'loss {row["best_loss_mean"]:.4f} +- {row["best_loss_sd"]:.4f} (3 seeds), '
              f'LR sensitivity {row["lr_sensitivity"]:.3f}, state {row["optimizer_state_bytes"] / 1e6:.2f} MB',
              flush=True)

    steps = [CompiledStep(config(args.size, name, lr, args.steps, 0, knob), one) for name, lr, knob in chosen]
    for row, timing in zip(table, measure_alternating(steps, args.timed_steps)):
        row['step_ms'] = timing['step_ms']
        print(f'{row["optimizer"]:>20}: step {timing["step_ms"]:.1f} ms ({args.timed_steps} steps, in turn)')
    cfg = config(args.size, 'adamw', 1e-3, args.steps, 0, {})
    files.write_json(out / 'results.json', {
        'model': f'experiments/lm_stdlib.py:{args.size}', 'steps': cfg.train.steps,
        'tokens': cfg.train.steps * cfg.train.global_batch * cfg.data.seq_len, 'optimizers': table})
    plot(table, out / 'optimizers.png', f'lm_stdlib.py:{args.size}, {cfg.train.steps} steps')
    print(f'wrote {out / "results.json"} and {out / "optimizers.png"}')
    return 0


def plot(table: list[dict], path: Path, what: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in table:
        lrs = [float(lr) for lr in row['losses_by_lr']]
        losses = [v if v is not None else float('nan') for v in row['losses_by_lr'].values()]
        line, = ax.plot(lrs, losses, 'o-', label=f'{row["optimizer"]}: {row["best_loss_mean"]:.3f} '
                        f'± {row["best_loss_sd"]:.3f} at {row["best_lr"]:g}')
        ax.errorbar([row['best_lr']], [row['best_loss_mean']], yerr=[[row['best_loss_sd']]], fmt='s',
                    color=line.get_color(), capsize=4, ms=7, mfc='white')
    ax.set(xscale='log', xlabel='peak learning rate', ylabel='final evaluation loss (nats/byte)',
           title=f'equal tokens ({what}): each optimizer over its rate (seed 0);\n'
                 'squares: 3 seeds at the best rate and knob (mean ± sd)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    sys.exit(main())
