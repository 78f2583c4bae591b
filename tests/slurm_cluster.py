"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's
munge and slurm-wlm, on localhost, in a temporary directory, stopped by pid at the end.

Needs root (slurmd starts each job's tasks as the submitting user) and the two packages
(`apt-get install -y slurm-wlm munge`; .ci/run installs them); without them the tests that
use it are skipped, saying which is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scalelab.training import launch_local

DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'squeue', 'scancel', 'scontrol', 'sinfo')
CPUS = 4  # slurmd takes the configured count (config_overrides): the same cluster on any machine


def executable(name: str) -> str | None:
    """A program's path: on PATH, or in /usr/sbin where Debian puts the daemons (off a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path='/usr/sbin')


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [name for name in DAEMONS + CLIENTS if executable(name) is None]
    if absent:
        return f'SLURM not installed ({", ".join(absent)} missing): apt-get install -y slurm-wlm munge'
    if os.geteuid() != 0:
        return 'a SLURM cluster needs root (slurmd starts the tasks as the submitting user)'
    return None


def slurm_conf(root: Path, ctld_port: int, slurmd_port: int) -> str:
    return '\n'.join([
        'ClusterName=scalelab-test', 'SlurmctldHost=localhost', 'SlurmUser=root', 'SlurmdUser=root',
        'AuthType=auth/munge', 'CredType=cred/munge', f'AuthInfo=socket={root}/munge.socket',
        f'SlurmctldPort={ctld_port}', f'SlurmdPort={slurmd_port}',
        f'StateSaveLocation={root}/state', f'SlurmdSpoolDir={root}/spool',
        f'SlurmctldPidFile={root}/slurmctld.pid', f'SlurmdPidFile={root}/slurmd.pid',
        f'SlurmctldLogFile={root}/slurmctld.log', f'SlurmdLogFile={root}/slurmd.log',
        'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none', 'MpiDefault=none',
        'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU', 'SlurmdParameters=config_overrides',
        'JobAcctGatherType=jobacct_gather/none', 'AccountingStorageType=accounting_storage/none',
        'ReturnToService=2', 'KillWait=10', f'FirstJobId={first_job_id()}',
        f'NodeName=localhost NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN',
        'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP', ''])


def first_job_id() -> int:
    """Job ids apart for each xdist worker's cluster: JAX derives a job's coordinator port from
    its id (id mod 4096), so two clusters' jobs running at once must not share ids."""
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0').removeprefix('gw')
    return 1 + 1000 * (int(worker) if worker.isdigit() else 0)


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / 'slurm.conf'
        self.env = {**os.environ, 'SLURM_CONF': str(self.conf),
                    'PATH': f'{Path(sys.executable).parent}:{os.environ.get("PATH", "/usr/bin:/bin")}'}
        self.daemons: list[subprocess.Popen] = []

    def start(self, timeout_s: float = 60) -> Cluster:
        for name in ('state', 'spool'):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        key = self.root / 'munge.key'
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.conf.write_text(slurm_conf(self.root, launch_local.free_port(), launch_local.free_port()))
        r = self.root
        self._daemon(['munged', '--foreground', '--force', f'--key-file={key}', f'--socket={r}/munge.socket',
                      f'--pid-file={r}/munged.pid', f'--log-file={r}/munged.log', f'--seed-file={r}/munged.seed'])
        self._wait(lambda: (r / 'munge.socket').exists(), timeout_s, 'munged made no socket')
        self._daemon(['slurmctld', '-D', '-i', '-f', str(self.conf)])
        self._daemon(['slurmd', '-D', '-N', 'localhost', '-f', str(self.conf)])
        self._wait(lambda: self.sinfo_state() == 'idle', timeout_s, 'the node never showed idle in sinfo')
        return self

    def _daemon(self, argv: list[str]) -> None:
        log = open(self.root / f'{argv[0]}.out', 'w')
        self.daemons.append(subprocess.Popen([executable(argv[0]), *argv[1:]], stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p.args[0] for p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-2000:] for p in self.root.glob('*.log')}
                raise RuntimeError(f'{what} (dead daemons: {dead}); logs: {logs}')
            time.sleep(0.2)

    def run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60, **kwargs)

    def sinfo_state(self) -> str:
        return self.run('sinfo', '-h', '-o', '%T').stdout.strip()

    def queued(self, job: str) -> bool:
        """Whether the job (every task of an array) is still pending, running or suspended."""
        return bool(self.run('squeue', '-h', '-j', job).stdout.strip())

    def wait_done(self, job: str, timeout_s: float = 300) -> dict:
        self._wait(lambda: not self.queued(job), timeout_s, f'job {job} still queued after {timeout_s} s')
        return self.job(job)

    def job(self, job: str) -> dict:
        """scontrol's record of a job (kept MinJobAge seconds after it ends): JobState, ExitCode, ..."""
        text = self.run('scontrol', 'show', 'job', job).stdout
        return dict(re.findall(r'(\w+)=(\S*)', text))

    def stop(self) -> None:
        self.run('scancel', '--partition=debug')
        deadline = time.monotonic() + 30
        while self.run('squeue', '-h').stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.5)
        for proc in reversed(self.daemons):  # slurmd, slurmctld, then munged
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def submitted_job(stdout: str) -> str:
    """The job id that launch/slurm.sh printed."""
    found = re.search(r'^submitted job (\d+)', stdout, re.M)
    assert found, stdout
    return found.group(1)
