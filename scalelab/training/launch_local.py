"""Start N cooperating processes on this machine, as a pod would: for testing the multi-host path.

    python -m scalelab.launch_local --processes 2 --devices-per-process 4 -- \\
        python -m scalelab.run --config experiments/lm_stdlib.py:tiny --workdir runs/mp

Each process gets the coordinator on a free loopback port, its id, and its
own virtual CPU devices; its output lines are prefixed with [p<id>]. SIGTERM
and Ctrl-C are passed on to every process. When one process fails, the others
are stopped (SIGTERM, then SIGKILL after a grace period) and the launcher
exits with the failure's code, naming the process.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from scalelab.core import cli, distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# Gloo reports every connection of every collective group it sets up (one line per device and
# group), from several threads at once, so its lines arrive cut and interleaved: noise for a
# user, who sees a failed connection as the peer's error anyway. Lines with any piece of that
# message are dropped.
_GLOO_PIECES = re.compile(r'\[Gloo\]|peer ranks|connected to \d|Expected number of connected')


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ''):
        if _GLOO_PIECES.search(line):
            continue
        out.write(f'{prefix} {line}')
        out.flush()


def launch(command: list[str], processes: int, devices_per_process: int, *, grace_s: float = 10.0,
           out=sys.stdout) -> int:
    coordinator = f'127.0.0.1:{free_port()}'
    procs = []
    for pid in range(processes):
        env = {**os.environ, distributed.ENV_COORDINATOR: coordinator,
               distributed.ENV_NUM_PROCESSES: str(processes), distributed.ENV_PROCESS_ID: str(pid),
               'JAX_NUM_CPU_DEVICES': str(devices_per_process), 'PYTHONUNBUFFERED': '1'}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=_pump, args=(proc.stdout, f'[p{pid}]', out), daemon=True).start()
        threading.Thread(target=_pump, args=(proc.stderr, f'[p{pid}]', out), daemon=True).start()
        procs.append(proc)

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                pid, code = failed[0]
                out.write(f'[launch_local] process {pid} exited with code {code}; stopping the others\n')
                _stop(procs, grace_s)
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop(procs, grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if '--' not in argv:
        print('usage: python -m scalelab.launch_local --processes N [--devices-per-process K] -- COMMAND ...',
              file=sys.stderr)
        return 2
    split = argv.index('--')
    parser = cli.ArgumentParser(prog='python -m scalelab.launch_local')
    parser.add_argument('--processes', type=int, required=True)
    parser.add_argument('--devices-per-process', type=int, default=1)
    parser.add_argument('--grace', type=float, default=10.0, help='seconds before stopped processes are killed')
    args = parser.parse_args(argv[:split])
    if args.processes < 1 or not argv[split + 1:]:
        parser.error('need --processes >= 1 and a command after --')
    return launch(argv[split + 1:], args.processes, args.devices_per_process, grace_s=args.grace)
