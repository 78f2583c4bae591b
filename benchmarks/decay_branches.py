"""Decay branches against separate full runs (Hägele et al. 2024), on a real model.

    python benchmarks/decay_branches.py [--out benchmarks/results/decay_branches]

The byte-level LM `experiments/lm_stdlib.py:tiny` on the standard library's source: one
trunk at a constant learning rate, branches from its checkpoints each decaying linearly to
zero over the last 20% of its length, and, for each branch length, a separate run with
its own cosine schedule (to 10% of the peak, the recipes' default) and the same warmup.
Hägele et al. find the branch matches (or beats) the cosine run of the same length; the
final evaluation losses are written to results.json, with decay_branches.png. Workdirs
under --runs (kept: a rerun trains only what is missing).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LENGTHS = (500, 1000, 1500)  # steps of each branch and its cosine twin
DECAY = 0.2                  # share of a branch's length spent decaying


def base(steps: int, schedule: str):
    from scalelab.training import recipes
    cfg = recipes.byte_lm('tiny')
    cfg.train.update(steps=steps, log_every=50, eval_every=0)
    cfg.data.eval_tokens = 65536
    cfg.optim.update(schedule=schedule, warmup_steps=50, learning_rate=3e-3)
    cfg.checkpoint.update(every_steps=100, keep=100)
    return cfg


def main() -> int:
    from harness import experiment_parser, experiment_setup
    args = experiment_parser(__doc__, 'decay_branches').parse_args()
    runs, out, one = experiment_setup(args)
    from scalelab.core import files
    from scalelab.training import loop, metrics
    trunk_steps = max(round(n * (1 - DECAY)) for n in LENGTHS)
    trunk = loop.run(base(trunk_steps, 'constant'), runs / 'trunk', devices=one)
    rows = []
    for n in LENGTHS:
        start = round(n * (1 - DECAY))
        branch_cfg = base(n, 'wsd')
        branch_cfg.optim.min_lr_ratio = 0.0
        branch_cfg.train.update(decay_from=str(runs / 'trunk'), decay_start=start)
        branch = loop.run(branch_cfg, runs / f'branch_{n}', devices=one)
        cosine = loop.run(base(n, 'cosine'), runs / f'cosine_{n}', devices=one)
        rows.append({'steps': n, 'tokens': branch['tokens'], 'decay_start': start,
                     'branch_eval_loss': branch['eval_loss'], 'cosine_eval_loss': cosine['eval_loss'],
                     'difference': branch['eval_loss'] - cosine['eval_loss'],
                     'branch_steps_trained': n - start, 'cosine_steps_trained': n})
        print(f'{n} steps: branch from {start} {branch["eval_loss"]:.4f}, cosine {cosine["eval_loss"]:.4f} '
              f'({branch["eval_loss"] - cosine["eval_loss"]:+.4f})', flush=True)
    steps_trained = trunk_steps + sum(r['branch_steps_trained'] for r in rows)
    result = {'model': 'experiments/lm_stdlib.py:tiny', 'decay_share': DECAY, 'trunk_steps': trunk_steps,
              'trunk_eval_loss': trunk['eval_loss'], 'rows': rows,
              'steps_for_all_branches': steps_trained, 'steps_for_all_cosine_runs': sum(LENGTHS)}
    files.write_json(out / 'results.json', result)
    plot(runs, rows, out / 'decay_branches.png', metrics)
    print(f'{len(rows)} points from {steps_trained} steps (trunk and branches) against {sum(LENGTHS)} for the '
          f'separate runs; wrote {out / "results.json"} and {out / "decay_branches.png"}')
    return 0


def plot(runs: Path, rows: list[dict], path: Path, metrics) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (curves, finals) = plt.subplots(1, 2, figsize=(12, 4.6))
    x, y = metrics.curves(runs / 'trunk', 'step')['train']
    curves.plot(x, y, color='0.6', label='trunk (constant lr)')
    for color, row in zip(('C0', 'C1', 'C2'), rows):
        for kind, style in (('branch', '-'), ('cosine', ':')):
            x, y = metrics.curves(runs / f'{kind}_{row["steps"]}', 'step')['train']
            curves.plot(x, y, style, color=color, label=f'{kind} {row["steps"]}')
    curves.set(xlabel='step', ylabel='training loss (nats/byte)', ylim=(1.4, 2.6),
               title='branches (solid) and cosine runs (dotted)')
    curves.legend(fontsize=7, ncol=2)
    steps = [r['steps'] for r in rows]
    finals.plot(steps, [r['branch_eval_loss'] for r in rows], 'o-', label='decay branch (WSD)')
    finals.plot(steps, [r['cosine_eval_loss'] for r in rows], 's--', label='separate cosine run')
    finals.set(xlabel='run length (steps)', ylabel='final evaluation loss', title='the same points, two ways')
    finals.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    sys.exit(main())
