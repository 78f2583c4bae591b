"""Decay branches against separate full runs (Hägele et al. 2024), on a real model.

    python benchmarks/decay_branches.py [--seeds 3] [--out benchmarks/results/decay_branches]

The byte-level LM `experiments/lm_stdlib.py:tiny` on the standard library's source: one
trunk at a constant learning rate, branches from its checkpoints each decaying linearly to
zero over the last 20% of its length, and, for each branch length, two separate runs with
their own cosine schedules and the same warmup: to 10% of the peak (the recipes' default)
and to zero (as the branches end). All of it once per seed (initialisation and data
order), so the seed-to-seed spread says what "within noise" means. Hägele et al. find the
branch matches (or beats) the cosine run of the same length; the final evaluation losses
are written to results.json, with decay_branches.png. Workdirs under --runs (kept: a rerun
trains only what is missing; seed 0's keep their first names).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LENGTHS = (500, 1000, 1500)  # steps of each branch and its cosine twin
DECAY = 0.2                  # share of a branch's length spent decaying


def base(steps: int, schedule: str, seed: int):
    from scalelab.training import recipes
    cfg = recipes.byte_lm('tiny')
    cfg.seed = seed
    cfg.train.update(steps=steps, log_every=50, eval_every=0)
    cfg.data.eval_tokens = 65536
    cfg.optim.update(schedule=schedule, warmup_steps=50, learning_rate=3e-3)
    cfg.checkpoint.update(every_steps=100, keep=100)
    return cfg


def seed_runs(runs: Path, seed: int, one) -> list[dict]:
    """One seed's trunk, branches and cosine runs: a row per length."""
    from harness import train
    tag = f'_s{seed}' if seed else ''
    trunk_steps = max(round(n * (1 - DECAY)) for n in LENGTHS)
    trunk = train(base(trunk_steps, 'constant', seed), runs / f'trunk{tag}', devices=one)
    rows = []
    for n in LENGTHS:
        start = round(n * (1 - DECAY))
        branch_cfg = base(n, 'wsd', seed)
        branch_cfg.optim.min_lr_ratio = 0.0
        branch_cfg.train.update(decay_from=str(runs / f'trunk{tag}'), decay_start=start)
        branch = train(branch_cfg, runs / f'branch_{n}{tag}', devices=one)
        cosine = train(base(n, 'cosine', seed), runs / f'cosine_{n}{tag}', devices=one)
        to_zero_cfg = base(n, 'cosine', seed)
        to_zero_cfg.optim.min_lr_ratio = 0.0
        to_zero = train(to_zero_cfg, runs / f'cosine0_{n}{tag}', devices=one)
        rows.append({'seed': seed, 'steps': n, 'tokens': branch['tokens'], 'decay_start': start,
                     'trunk_eval_loss': trunk['eval_loss'], 'branch_eval_loss': branch['eval_loss'],
                     'cosine_eval_loss': cosine['eval_loss'], 'cosine_to_zero_eval_loss': to_zero['eval_loss'],
                     'difference': branch['eval_loss'] - cosine['eval_loss'],
                     'difference_to_zero': branch['eval_loss'] - to_zero['eval_loss'],
                     'branch_steps_trained': n - start, 'cosine_steps_trained': n})
        print(f'seed {seed}, {n} steps: branch from {start} {branch["eval_loss"]:.4f}, cosine to 10% '
              f'{cosine["eval_loss"]:.4f} ({rows[-1]["difference"]:+.4f}), cosine to 0 {to_zero["eval_loss"]:.4f} '
              f'({rows[-1]["difference_to_zero"]:+.4f})', flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per length: mean and seed-to-seed standard deviation of each loss and difference."""
    import statistics
    out = []
    for n in LENGTHS:
        mine = [r for r in rows if r['steps'] == n]
        entry = {'steps': n, 'seeds': len(mine)}
        for key in ('branch_eval_loss', 'cosine_eval_loss', 'cosine_to_zero_eval_loss', 'difference',
                    'difference_to_zero'):
            values = [r[key] for r in mine]
            entry[key] = statistics.mean(values)
            entry[f'{key}_sd'] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def main() -> int:
    from harness import experiment_parser, experiment_setup
    p = experiment_parser(__doc__, 'decay_branches')
    p.add_argument('--seeds', type=int, default=3)
    args = p.parse_args()
    runs, out, one = experiment_setup(args)
    from scalelab.core import files
    from scalelab.training import metrics
    rows = [row for seed in range(args.seeds) for row in seed_runs(runs, seed, one)]
    by_length = summarize(rows)
    trunk_steps = max(round(n * (1 - DECAY)) for n in LENGTHS)
    steps_trained = trunk_steps + sum(n - round(n * (1 - DECAY)) for n in LENGTHS)
    result = {'model': 'experiments/lm_stdlib.py:tiny', 'decay_share': DECAY, 'trunk_steps': trunk_steps,
              'seeds': args.seeds, 'rows': rows, 'by_length': by_length,
              'steps_for_all_branches': steps_trained, 'steps_for_all_cosine_runs': sum(LENGTHS)}
    files.write_json(out / 'results.json', result)
    plot(runs, by_length, out / 'decay_branches.png', metrics)
    for e in by_length:
        print(f'{e["steps"]} steps over {e["seeds"]} seeds: branch - cosine {e["difference"]:+.4f} '
              f'(sd {e["difference_sd"] or 0:.4f}), branch - cosine to 0 {e["difference_to_zero"]:+.4f} '
              f'(sd {e["difference_to_zero_sd"] or 0:.4f})')
    print(f'{len(LENGTHS)} points from {steps_trained} steps (trunk and branches) against {sum(LENGTHS)} for the '
          f'separate runs, per seed; wrote {out / "results.json"} and {out / "decay_branches.png"}')
    return 0


def plot(runs: Path, rows: list[dict], path: Path, metrics) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (curves, finals) = plt.subplots(1, 2, figsize=(12, 4.6))
    x, y = metrics.curves(runs / 'trunk', 'step')['train']
    curves.plot(x, y, color='0.6', label='trunk (constant lr)')
    for color, row in zip(('C0', 'C1', 'C2'), rows):  # seed 0's curves
        for kind, style in (('branch', '-'), ('cosine', ':')):
            x, y = metrics.curves(runs / f'{kind}_{row["steps"]}', 'step')['train']
            curves.plot(x, y, style, color=color, label=f'{kind} {row["steps"]}')
    curves.set(xlabel='step', ylabel='training loss (nats/byte)', ylim=(1.4, 2.6),
               title='branches (solid) and cosine runs (dotted)')
    curves.legend(fontsize=7, ncol=2)
    steps = [r['steps'] for r in rows]
    for key, style, label in (('branch_eval_loss', 'o-', 'decay branch (WSD, to 0)'),
                              ('cosine_eval_loss', 's--', 'separate cosine run (to 10%)'),
                              ('cosine_to_zero_eval_loss', '^:', 'separate cosine run (to 0)')):
        finals.errorbar(steps, [r[key] for r in rows], yerr=[r[f'{key}_sd'] or 0 for r in rows], fmt=style,
                        capsize=3, label=label)
    finals.set(xlabel='run length (steps)', ylabel='final evaluation loss',
               title=f'the same points, three ways (mean ± sd over {rows[0]["seeds"]} seeds)')
    finals.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    sys.exit(main())
