"""Start-up of one program over many processes (JAX's multi-controller runtime).

Where the coordinator comes from, first match wins: explicit flags, the
SCALELAB_COORDINATOR / SCALELAB_NUM_PROCESSES / SCALELAB_PROCESS_ID
environment (set by scalelab.launch_local), or a detected cluster (a SLURM
job with several tasks, a multi-host TPU slice), which JAX configures itself.
"""
from __future__ import annotations

import os

import jax

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    'SCALELAB_COORDINATOR', 'SCALELAB_NUM_PROCESSES', 'SCALELAB_PROCESS_ID')


def detected_cluster() -> str | None:
    """'slurm' or 'tpu' when this process is one of several in a cluster job."""
    if os.environ.get('SLURM_JOB_ID') and int(os.environ.get('SLURM_NTASKS', '1')) > 1:
        return 'slurm'
    if ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
        return 'tpu'
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, timeout_s: int = 300, heartbeat_s: int = 100) -> str:
    """Join the multi-process runtime if this is a multi-process run; returns how
    ('explicit', 'slurm', 'tpu') or 'single'. Call before the first JAX operation.

    A peer that stops heart-beating for `heartbeat_s` makes the others abort
    instead of waiting forever.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    cluster = None if coordinator else detected_cluster()
    if coordinator or cluster:  # CPU collectives across processes need gloo; GPU and TPU ignore it
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    if coordinator:
        num_processes = num_processes if num_processes is not None else int(os.environ[ENV_NUM_PROCESSES])
        process_id = process_id if process_id is not None else int(os.environ[ENV_PROCESS_ID])
        if not 0 <= process_id < num_processes:
            raise ValueError(f'process_id={process_id}: must be in [0, num_processes={num_processes})')
        loopback = coordinator.startswith(('127.', 'localhost'))
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
            coordinator_bind_address=coordinator if loopback else None,
            initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_s)
        return 'explicit'
    if cluster:
        jax.distributed.initialize(initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_s)
    return cluster or 'single'
