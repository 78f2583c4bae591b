"""Files written whole or not at all: the one atomic-write helper every module uses.

A reader (a sweep, a resumed run, TensorBoard) never sees half a file, even if
the writer is killed mid-write: the content goes to a temporary file beside the
target, is flushed to disk, and is renamed over the target in one step. The
temporary name carries the pid, so concurrent writers of one path never share it.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path


def write_atomic(path: str | Path, content: str | bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    data = content.encode() if isinstance(content, str) else content
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """`rows` under `columns`; a None is written as an empty cell."""
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: ('' if row.get(k) is None else row.get(k)) for k in columns} for row in rows)
    write_atomic(path, text.getvalue())


@contextlib.contextmanager
def staged_dir(out: str | Path):
    """A directory written whole or not at all: yields a temporary directory beside `out`;
    when the block ends without error it takes `out`'s place (an old `out` is removed only
    then), and on any error, or a kill, `out` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f'.{out.name}.*.tmp'):  # a killed writer's: its pid is gone
        pid = stale.name[len(out.name) + 2:-len('.tmp')]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f'.{out.name}.{os.getpid()}.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = out.with_name(f'.{out.name}.{os.getpid()}.old')
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
