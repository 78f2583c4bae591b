"""A run's workdir as a place: a usable path, one process at a time, readable files.

The lock is `fcntl.flock` on workdir/.lock, which holds the owner's pid, host
and start time for the message a second process gets. The kernel releases a
flock when its process dies, however it dies, so a lock is never stale on the
machine that took it (on a network filesystem without flock support, see the
README's reliability section).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from scalelab.core import files
from scalelab.core.errors import ConfigError, UsageError

LOCK = '.lock'
EXIT = 'exit.json'


def check_path(workdir: Path) -> None:
    """A workdir that cannot be one: a regular file, or under one."""
    for path in (workdir, *workdir.parents):
        if path.exists() and not path.is_dir():
            what = 'is' if path == workdir else f'is under {path}, which is'
            raise ConfigError([f'--workdir {workdir}: {what} a file, not a directory; choose another --workdir'])


def is_workdir(path: Path) -> bool:
    """A run's (or an import's) workdir: what scalelab.run, generate and evaluate read."""
    return any((Path(path) / name).exists() for name in ('checkpoints', 'metrics.jsonl', 'summary.json', LOCK))


def check_output(out: Path, flag: str, overwrite: bool, *, directory: bool) -> None:
    """Refuse an output path a command would lose data by writing: a run's workdir (never
    written into), a file where a directory goes (or a path under a file), or anything that
    exists unless `overwrite` (a non-empty directory, an existing file)."""
    out = Path(out)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f'{flag} {out}: is under {parent}, which is a file; choose another {flag}')
    if out.exists() and out.is_dir() and is_workdir(out):
        raise UsageError(f'{flag} {out}: is a run\'s workdir; writing there would replace its files '
                           f'(config.json, ...); choose another {flag}')
    if directory and out.exists() and not out.is_dir():
        raise UsageError(f'{flag} {out}: is a file, not a directory; choose another {flag}')
    if not directory and out.is_dir():
        raise UsageError(f'{flag} {out}: is a directory; give a file path')
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        what = 'a non-empty directory' if out.is_dir() else 'an existing file'
        raise UsageError(f'{flag} {out}: is {what}; pass --overwrite to replace it, or choose another {flag}')


def read_json(path: Path, what_to_do: str) -> dict:
    """A JSON file of the workdir, or one error naming it and what to do."""
    if not Path(path).is_file():
        raise ConfigError([f'{path}: no such file; {what_to_do}'])
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f'{path}: corrupt ({e.__class__.__name__}: {e}); {what_to_do}']) from None


class Lock:
    """Held for the whole run by the process that writes the workdir (process 0)."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK
        self.file = None

    def __enter__(self) -> Lock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, 'a+')
        except OSError as e:
            raise ConfigError([f'--workdir {self.path.parent}: cannot be written ({e.strerror}); '
                               'choose another --workdir']) from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            holder = owner(self.path.parent)
            raise ConfigError([f'--workdir {self.path.parent}: in use by {describe(holder)}; wait for it to '
                               'finish or stop it (SIGTERM checkpoints it), then run this again']) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.time()}))
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # releases the flock


def owner(workdir: Path) -> dict | None:
    """Who holds the workdir's lock now (pid, host, since), or None if nobody does."""
    path = Path(workdir) / LOCK
    if not path.exists():
        return None
    with open(path, 'a+') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                return json.loads(f.read() or '{}')
            except json.JSONDecodeError:
                return {}
        return None  # free (closing the file releases the flock just taken)


def describe(holder: dict | None) -> str:
    holder = holder or {}
    since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['since'])) if 'since' in holder else '?'
    return f'pid {holder.get("pid", "?")} on {holder.get("host", "?")} (since {since})'


def record_exit(workdir: Path, code: int, error: str) -> None:
    """exit.json: why the latest attempt at this run failed, for a sweep's table and for a
    cluster job's user, whose console is a log file. Written only into a workdir that exists
    (a mistyped command on a new path creates nothing) and that no other process holds (a run
    refused by the lock never writes into the holder's run); a run that starts training
    removes it."""
    workdir = Path(workdir)
    try:
        if workdir.is_dir() and owner(workdir) is None:
            files.write_json(workdir / EXIT, {'exit_code': code, 'error': error, 'host': socket.gethostname(),
                                              'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})
    except OSError:
        pass  # an unwritable workdir: the error on the console already says so


def read_exit(workdir: Path) -> dict | None:
    """The recorded failure of the latest attempt (exit_code, error, host, time), if any."""
    path = Path(workdir) / EXIT
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {'exit_code': None, 'error': f'{path}: unreadable'}
