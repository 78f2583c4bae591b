"""Mutation testing of the numeric core: how many planted bugs the tests catch, module by module.

    pip install -e '.[mutation]'
    python benchmarks/mutation.py                          # every module below (about an hour on 2 cores)
    python benchmarks/mutation.py --modules science/flops.py,sweep/checks.py

mutmut (PyPI) rewrites each function of a module into variants with one small change
(a constant, an operator, a comparison, an argument dropped) and runs the tests that
call that function against each. A mutant is *killed* when a test fails, *survived*
when all pass, *no tests* when no selected test calls the function at all, *timeout*
when the tests run past mutmut's limit (counted as caught: the change broke it).

Each module runs against the test files that cover it (MODULES), in a scratch copy of
the working tree, so one module takes minutes, not the whole suite per mutant. The
score is caught / (caught + survived + no tests): a function no test calls counts
against its module. Writes benchmarks/results/mutation/scores.json (counts per module)
and survivors-<module>.txt (each surviving or untested mutant's diff, to kill with a test or to write down
as equivalent in benchmarks/results/mutation/README.md). Not part of CI's run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# module (under scalelab/) -> the test files that exercise it
MODULES = {
    'science/flops.py': ['test_counting.py', 'test_surfaces.py'],
    'science/scaling.py': ['test_scaling.py', 'test_fit_checks.py'],
    'science/isoflop.py': ['test_isoflop.py'],
    'science/envelope.py': ['test_envelope.py'],
    'science/shapes.py': ['test_shapes.py'],
    'sweep/checks.py': ['test_fit_checks.py', 'test_compute_optimal.py'],
    'sweep/compute_optimal.py': ['test_compute_optimal.py'],
    'sweep/compare.py': ['test_compare.py'],
    'sweep/lr_laws.py': ['test_lr_laws.py'],
    'training/optim.py': ['test_optim.py'],
    'training/metrics.py': ['test_metrics.py'],
    'training/diagnostics.py': ['test_diagnostics.py'],
    'models/decoding.py': ['test_decoding.py'],
    'core/downstream.py': ['test_downstream.py'],
}
CAUGHT = ('killed', 'timeout', 'segfault')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--modules', default=','.join(MODULES),
                   help=f'comma-separated, from: {", ".join(MODULES)}')
    p.add_argument('--children', type=int, default=2, help='mutants tested at once')
    p.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'mutation'),
                   help="folder for scores.json and the survivors-<module>.txt files")
    p.add_argument('--workdir', default=None,
                   help='keep each module\'s scratch copy in <workdir>/<module> (default: a temporary folder, '
                        'deleted after): a run stopped part way resumes there, keeping the mutants it tested')
    args = p.parse_args()
    unknown = [m for m in args.modules.split(',') if m not in MODULES]
    if unknown:
        p.error(f'--modules: {", ".join(unknown)} not known; valid: {", ".join(MODULES)}')
    return args


def scratch_copy(dest: Path) -> None:
    """The working tree's tracked files (uncommitted edits included): what mutmut mutates."""
    listed = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split('\0')):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def mutmut_config(module: str, tests: list[str]) -> str:
    return '\n'.join([
        '', '[tool.mutmut]',
        'source_paths = ["scalelab"]',
        'also_copy = ["experiments", "benchmarks", "launch", "docs", "README.md", "mkdocs.yml"]',
        f'only_mutate = ["scalelab/{module}"]',
        'pytest_add_cli_args_test_selection = [' + ', '.join(f'"tests/{t}"' for t in tests) + ']',
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
        'process_isolation = "forkserver"',   # JAX's threads do not survive a fork from pytest's process
        '',
    ])


def mutmut(work: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run([sys.executable, '-m', 'mutmut', *args], cwd=work, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f'mutmut {" ".join(args)} failed in {work} (exit {done.returncode}):\n'
                         f'{done.stdout[-2000:]}{done.stderr[-2000:]}')
    return done.stdout


def prepare(work: Path, module: str) -> None:
    """A scratch copy set up for mutmut, unless `work` holds one already (mutmut then
    retests only the mutants without a result, and any whose function changed since)."""
    if (work / 'pyproject.toml').exists():
        print(f'{module}: resuming in {work}', flush=True)
        return
    work.mkdir(parents=True, exist_ok=True)
    scratch_copy(work)
    with open(work / 'pyproject.toml', 'a') as f:
        f.write(mutmut_config(module, MODULES[module]))


def run_module(module: str, children: int, workdir: str | None) -> tuple[dict, list[str]]:
    """(counts, survivor diffs) of one module's mutants."""
    with contextlib.ExitStack() as stack:
        work = (Path(workdir) / module.replace('/', '-').removesuffix('.py') if workdir else
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='scalelab-mutation-'))))
        prepare(work, module)
        mutmut(work, 'run', '--max-children', str(children))
        status = {}
        for line in mutmut(work, 'results', '--all', 'true').splitlines():
            name, _, state = line.strip().rpartition(': ')
            if name:
                status[name] = state
        counts = {s: sum(1 for v in status.values() if v == s) for s in sorted(set(status.values()))}
        caught = sum(counts.get(s, 0) for s in CAUGHT)
        missed = counts.get('survived', 0) + counts.get('no tests', 0)
        counts.update(total=len(status), caught=caught,
                      score=round(caught / (caught + missed), 4) if caught + missed else None)
        diffs = [f'# {name}: {state}\n' + mutmut(work, 'show', name, check=False)
                 for name, state in sorted(status.items()) if state in ('survived', 'no tests')]
        return counts, diffs


def main():
    args = parse_args()
    from scalelab.core import files
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scores_path = out / 'scores.json'
    print(f'{"module":28} {"mutants":>8} {"caught":>7} {"survived":>9} {"no tests":>9} {"score":>6}')
    for module in args.modules.split(','):
        counts, diffs = run_module(module, args.children, args.workdir)
        scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}   # re-read: other runs add theirs
        scores[module] = dict(counts, tests=MODULES[module])
        files.write_json(scores_path, scores)     # a module's result is kept as soon as it exists
        print(f'{module:28} {counts["total"]:8d} {counts["caught"]:7d} {counts.get("survived", 0):9d} '
              f'{counts.get("no tests", 0):9d} {counts["score"] or 0:6.1%}', flush=True)
        with open(out / f'survivors-{module.replace("/", "-").removesuffix(".py")}.txt', 'w') as f:
            f.write('\n'.join(diffs))
    print(f'wrote {scores_path} and the survivors beside it')


if __name__ == '__main__':
    main()
