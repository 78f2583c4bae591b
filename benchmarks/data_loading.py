"""Data throughput: tokenizing a corpus (scalelab.data.prepare, 1 and 2 processes)
and drawing training batches from its memmap-format shards, against what the
default model's training step consumes.

    python benchmarks/data_loading.py --tokenizer corpora/stdlib_bpe4096     # the stdlib source, 31 MB
    python benchmarks/data_loading.py --tokenizer gpt2.tiktoken --input DIR --pattern '*.txt'
    python benchmarks/data_loading.py --quick                                # seconds: a smoke test

Prepare throughput is input MB (UTF-8 bytes of the documents) per second of the
whole command after the tokenizer exists (no BPE training). Loader throughput
is tokens/s of `train_batch` (random windows read with pread) at the default
run's batch (32 x 128) and at 64 x 1024. The step's consumption is the default
config's (experiments/lm_stdlib.py) median step on this machine. Prints a table
and writes benchmarks/results/data_<host>.json.
"""
from __future__ import annotations

import argparse
import platform
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=sysconfig.get_paths()['stdlib'], help='what prepare tokenizes')
    p.add_argument('--pattern', default='*.py')
    p.add_argument('--tokenizer', default='bytes', help='a tokenizer spec (scalelab.tokenizer)')
    p.add_argument('--processes', default='1,2', help='prepare is timed with each of these --num-proc')
    p.add_argument('--seconds', type=float, default=5.0, help='loader timing per batch shape')
    p.add_argument('--quick', action='store_true', help='the stdlib json package, short timings')
    p.add_argument('--out', default=None, help='JSON path (default benchmarks/results/data_<host>.json)')
    args = p.parse_args()
    if args.quick:
        args.input, args.seconds = str(Path(sysconfig.get_paths()['stdlib']) / 'json'), 0.5
    return args


def loader_tokens_per_s(corpus_dir: Path, batch: int, seq_len: int, seconds: float) -> float:
    from ml_collections import ConfigDict

    from scalelab.data import corpus
    cfg = ConfigDict(dict(corpus.default_config(), path=str(corpus_dir), seq_len=seq_len, eval_tokens=seq_len))
    source = corpus.load(cfg, batch, seed=0)
    rows = slice(0, batch)
    source.train_batch(0, rows)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        source.train_batch(steps, rows)
        steps += 1
    return steps * batch * seq_len / (time.perf_counter() - start)


def default_step_tokens_per_s(quick: bool) -> float:
    """The default experiment's training step, as benchmarks/step_throughput.py measures one."""
    import importlib.util

    import jax

    from benchmarks.step_throughput import measure_step
    spec = importlib.util.spec_from_file_location('lm_stdlib', REPO / 'experiments' / 'lm_stdlib.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config('tiny' if quick else 'small')
    cfg.mesh.data = 1
    return measure_step(cfg, jax.devices()[:1], steps=2 if quick else 5)['tokens_per_s']


def main():
    args = parse_args()
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    from harness import write_result
    from scalelab.data import prepare

    result = dict(host=platform.node(), input=args.input, pattern=args.pattern, tokenizer=args.tokenizer,
                  prepare=[], loader=[])
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (int(p) for p in args.processes.split(',')):
            out = Path(tmp) / f'corpus{processes}'
            start = time.perf_counter()
            meta = prepare.prepare([args.input], args.tokenizer, out, pattern=args.pattern, num_proc=processes,
                                   log=lambda *_: None)
            seconds = time.perf_counter() - start
            megabytes = sum(s['bytes'] for s in meta['splits'].values()) / 1e6
            tokens = sum(s['tokens'] for s in meta['splits'].values())
            result['prepare'].append(dict(processes=processes, seconds=seconds, megabytes=megabytes, tokens=tokens,
                                          mb_per_s=megabytes / seconds, tokens_per_s=tokens / seconds))
        for batch, seq_len in ((32, 128), (64, 1024)):
            rate = loader_tokens_per_s(out, batch, seq_len, args.seconds)
            result['loader'].append(dict(batch=batch, seq_len=seq_len, tokens_per_s=rate))
    result['default_step_tokens_per_s'] = default_step_tokens_per_s(args.quick)
    for row in result['loader']:
        row['times_default_step'] = row['tokens_per_s'] / result['default_step_tokens_per_s']

    print(f'prepare ({args.tokenizer}, {result["prepare"][0]["megabytes"]:.1f} MB of {args.input}):')
    for row in result['prepare']:
        print(f'  {row["processes"]} process(es): {row["seconds"]:.1f} s, {row["mb_per_s"]:.2f} MB/s, '
              f'{row["tokens_per_s"]:,.0f} tokens/s')
    print(f'loader (one process), against the default step\'s {result["default_step_tokens_per_s"]:,.0f} tokens/s:')
    for row in result['loader']:
        print(f'  {row["batch"]} x {row["seq_len"]}: {row["tokens_per_s"]:,.0f} tokens/s '
              f'= {row["times_default_step"]:,.0f} x the step')
    write_result(result, args.out, 'data_{host}.json')


if __name__ == '__main__':
    main()
