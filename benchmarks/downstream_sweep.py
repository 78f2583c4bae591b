"""Score every completed point of a finished sweep (and any extra run) on downstream tasks,
for a task scaling law: the sweep's results.csv with `downstream/<task>/<metric>` columns.

    python benchmarks/downstream_sweep.py --sweep runs/isoflop --extra runs/isoflop_verify \\
        --tasks hellaswag:rc_0shot,arc_easy:rc_0shot --limit 1000 \\
        --out benchmarks/results/task_law/results.csv
    python -m scalelab.sweep fit --results benchmarks/results/task_law/results.csv --law task \\
        --task hellaswag:rc_0shot

A sweep trained with eval.downstream_tasks has these columns already; this is for one
trained without them. Each point's newest checkpoint is scored by the same code as
`python -m scalelab.downstream` (its throughput: benchmarks/downstream.py). An extra
run becomes a row of its own (N with the head, D its tokens, C = 6 N D).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def extra_row(workdir: Path, columns: list[str]) -> dict:
    from scalelab.core import workdir as workdir_lib
    from scalelab.science import flops
    summary = workdir_lib.read_json(workdir / 'summary.json', 'the run must have finished')
    n, d = summary['params']['with_head'], summary['tokens']
    row = dict.fromkeys(columns)
    row.update(name=workdir.name, status=summary['status'], N=n, N_with_head=n, D=d, C=6.0 * n * d,
               loss=summary['eval_loss'], bits_per_byte=summary.get('eval_bits_per_byte'),
               flop_convention=flops.FLOP_CONVENTION)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sweep', required=True, help='a sweep directory: results.csv and points/')
    p.add_argument('--extra', action='append', default=[], help='another run workdir to score as a row')
    p.add_argument('--tasks', required=True)
    p.add_argument('--limit', type=int, default=1000)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--out', required=True, help='the CSV to write')
    args = p.parse_args()
    from scalelab.core import files, runtime
    from scalelab.sweep import results
    from scalelab.use import downstream
    runtime.configure()
    sweep = Path(args.sweep)
    rows = [r for r in results.read_csv(sweep / 'results.csv') if r['status'] == 'completed']
    columns = list(rows[0])
    rows += [extra_row(Path(w), columns) for w in args.extra]
    tasks = args.tasks.split(',')
    for i, row in enumerate(rows):
        workdir = sweep / 'points' / row['name'] if (sweep / 'points' / row['name']).is_dir() else next(
            Path(w) for w in args.extra if Path(w).name == row['name'])
        print(f'[{i + 1}/{len(rows)}] {row["name"]}', flush=True)
        lines = []
        scores = downstream.score_workdir(str(workdir), tasks, args.limit, args.batch, report=lines.append)
        for line in lines:
            print('  ' + line, flush=True)
        for task, metrics in scores.items():
            row.update({f'downstream/{task}/{metric}': value for metric, value in metrics.items()})
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        files.write_csv(out, rows[:i + 1], list(rows[i]))  # a kill keeps the rows scored so far
    return 0


if __name__ == '__main__':
    sys.exit(main())
