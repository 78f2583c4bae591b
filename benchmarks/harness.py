"""What the benchmarks share: a call timed after its warm-up, and where their JSON goes.

Imported by the scripts beside it (their own folder is first on sys.path when run as
`python benchmarks/<name>.py`)."""
from __future__ import annotations

import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / 'results'


def timed(fn):
    """(fn()'s result, seconds) of a second call: the first compiles and is not timed."""
    fn()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def write_result(result: dict, out: str | None, name: str) -> Path:
    """Writes `result` as JSON to `out`, else to benchmarks/results/`name` ({host} filled in)."""
    from scalelab.core import files
    path = Path(out) if out else RESULTS / name.format(host=platform.node())
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, result)
    print(f'wrote {path}')
    return path


def experiment_parser(doc: str, name: str):
    """The argument parser of an experiment script whose runs are kept under runs/<name>
    (a rerun trains only what is missing) and whose write-up is benchmarks/results/<name>."""
    import argparse
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', default=str(RESULTS.parents[1] / 'runs' / name))
    p.add_argument('--out', default=str(RESULTS / name))
    return p


def experiment_setup(args) -> tuple[Path, Path, list]:
    """(runs folder, results folder made, one device): JAX configured as scalelab.run does."""
    from scalelab.core import runtime
    runtime.configure()
    import jax
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return Path(args.runs), out, jax.devices()[:1]


def train(cfg, workdir, devices) -> dict:
    """loop.run's summary, except that a run stopped by a signal stops the whole experiment
    (else the script would go on to its next run, and a kill would not stop it): its
    checkpoint stands, and running the script again resumes it."""
    from scalelab.training import loop
    summary = loop.run(cfg, workdir, devices=devices)
    if summary['status'] == 'preempted':
        raise SystemExit(f'{workdir}: stopped at step {summary["step"]} by a signal; run the script again to resume')
    return summary
