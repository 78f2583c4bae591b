"""The gradient noise scale B_simple against the critical batch measured directly, on a real model.

    python benchmarks/critical_batch.py [--tokens 1.5e6] [--min-steps 400] [--out benchmarks/results/critical_batch]

The byte-level LM `experiments/lm_stdlib.py:tiny` (d_model 64, 2 layers, 64-byte windows) on
the standard library's source, every run for the same tokens (or --min-steps, so the large
batches reach the losses the small ones do) at a constant learning rate
after a 2% warmup, scaled as lr0 sqrt(B / 16) (Adam's square-root rule):
1. one run at batch 64 in 8 microbatches with log.noise_scale: B_simple as the loss falls;
2. runs at batches 8 .. 256: for target losses every run reaches, the examples E(B) each
   needed; E(B) = E_min (1 + B / B_crit) fitted per target (science.critical_batch);
3. B_crit against B_simple at the same loss: results.json and critical_batch.png.
Workdirs go under --runs (kept: a rerun trains only what is missing).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BATCHES = (8, 16, 32, 64, 128, 256)
NOISE_BATCH, NOISE_MICRO = 64, 8


def config(batch: int, tokens: float, lr0: float, noise: bool, min_steps: int):
    from scalelab.training import recipes
    cfg = recipes.byte_lm('tiny')
    steps = max(int(round(tokens / (batch * cfg.data.seq_len))), min_steps)
    cfg.train.update(global_batch=batch, steps=steps, log_every=max(1, steps // 150), eval_every=0)
    cfg.optim.update(learning_rate=lr0 * (batch / 16) ** 0.5, schedule='constant', warmup_fraction=0.02,
                     warmup_steps=0)
    cfg.checkpoint.every_steps = max(steps, 1)
    if noise:
        cfg.train.microbatches = NOISE_MICRO
        cfg.log.noise_scale = True
    return cfg


def main() -> int:
    from harness import experiment_parser, experiment_setup, train
    p = experiment_parser(__doc__, 'critical_batch')
    p.add_argument('--tokens', type=float, default=1.5e6, help='tokens each run trains')
    p.add_argument('--min-steps', type=int, default=400, help='steps at least, whatever the batch')
    p.add_argument('--lr', type=float, default=2e-3, help='learning rate at batch 16')
    args = p.parse_args()
    runs, out, one = experiment_setup(args)
    import numpy as np

    from scalelab.core import files
    from scalelab.science import critical_batch
    from scalelab.training import metrics

    noise_dir = runs / f'noise_b{NOISE_BATCH}'
    train(config(NOISE_BATCH, args.tokens, args.lr, True, args.min_steps), noise_dir, one)
    logged = [r for r in metrics.read_jsonl(noise_dir / 'metrics.jsonl') if 'noise_scale' in r]
    noise = {'loss': [r['loss'] for r in logged], 'B_simple': [r['noise_scale'] for r in logged],
             'tokens': [r['tokens'] for r in logged]}

    curves = {}
    for batch in BATCHES:
        train(config(batch, args.tokens, args.lr, False, args.min_steps), runs / f'b{batch}', one)
        tokens, loss = metrics.curves(runs / f'b{batch}', 'tokens')['train']
        curves[batch] = (tokens / 64, loss)  # examples (64-byte windows), loss

    worst_final = max(float(np.mean(loss[-3:])) for _, loss in curves.values())
    targets = [float(t) for t in np.linspace(worst_final + 0.03, worst_final + 0.5, 5)]
    by_target = []
    for target in targets:
        examples = [critical_batch.examples_to_reach(*curves[b], target) for b in BATCHES]
        fit = critical_batch.fit_tradeoff(np.array(BATCHES), np.array(examples))
        # B_simple where the noise run's loss (a running mean of 3) crosses the target
        smooth = np.convolve(noise['loss'], np.ones(3) / 3, mode='valid')
        at = np.flatnonzero(smooth <= target)
        b_simple = float(np.median(noise['B_simple'][at[0]:at[0] + 3])) if at.size else float('nan')
        by_target.append({'target_loss': target, 'examples': examples, **fit, 'B_simple': b_simple})
        print(f'loss {target:.3f}: E(B) {[f"{e:.3g}" for e in examples]} -> B_crit {fit["B_crit"]:.1f}, '
              f'E_min {fit["E_min"]:.3g}; B_simple {b_simple:.1f}')
    result = {'model': 'experiments/lm_stdlib.py:tiny', 'tokens_per_run': args.tokens, 'min_steps': args.min_steps,
              'lr_at_16': args.lr,
              'batches': list(BATCHES), 'noise_run': {'batch': NOISE_BATCH, 'microbatches': NOISE_MICRO, **noise},
              'final_loss': {str(b): float(np.mean(curves[b][1][-3:])) for b in BATCHES}, 'targets': by_target}
    files.write_json(out / 'results.json', result)
    plot(result, curves, out / 'critical_batch.png')
    print(f'wrote {out / "results.json"} and {out / "critical_batch.png"}')
    return 0


def plot(result: dict, curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(curves)))
    for color, (batch, (examples, loss)) in zip(colors, curves.items()):
        left.plot(examples, loss, color=color, label=f'B = {batch}')
    left.set(xscale='log', xlabel='examples (64-byte windows)', ylabel='training loss (nats/byte)',
             title='equal tokens at each batch size')
    left.legend(fontsize=8)
    batches = np.array(result['batches'], float)
    grid = np.linspace(0, batches.max(), 100)
    for color, t in zip(plt.cm.plasma(np.linspace(0, 0.8, len(result['targets']))), result['targets']):
        middle.plot(batches, t['examples'], 'o', color=color, label=f'loss {t["target_loss"]:.2f}')
        middle.plot(grid, t['E_min'] + t['S_min'] * grid, '-', color=color, alpha=0.6)
    middle.set(xlabel='batch B (examples)', ylabel='examples to reach the loss',
               title='E(B) = E_min (1 + B / B_crit)')
    middle.legend(fontsize=8)
    noise = result['noise_run']
    right.plot(noise['loss'], noise['B_simple'], '.', alpha=0.4, label='B_simple (each log interval)')
    window = 15  # a running median over log intervals: one interval's estimate is noisy
    medians = [np.median(noise['B_simple'][max(0, i - window // 2):i + window // 2 + 1])
               for i in range(len(noise['B_simple']))]
    right.plot(noise['loss'], medians, '-', color='C0', label=f'B_simple, running median of {window}')
    right.plot([t['target_loss'] for t in result['targets']], [t['B_crit'] for t in result['targets']], 'rs-',
               label='B_crit from E(B)')
    right.set(xlabel='training loss (nats/byte)', ylabel='batch (examples)', yscale='log',
              title='noise scale vs measured critical batch')
    right.invert_xaxis()
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    sys.exit(main())
