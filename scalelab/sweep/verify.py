"""Predict, then verify: the run a compute-optimal fit predicts, written down before it trains,
and its measured loss set against the prediction afterwards.

    python -m scalelab.sweep predict --workdir runs/isoflop --out prediction.json
    python -m scalelab.run ...                      # the command prediction.json holds
    python -m scalelab.sweep verify --prediction prediction.json --run runs/isoflop_verify --out verification.json

The predicted model is the sweep's own architecture at the size its shape rule solves for
N_opt (so N is within shape.tolerance of it), trained for the predicted budget C; it is
scored on the sweep's evaluation set, so its loss is the sweep's metric on the same bytes.
"""
from __future__ import annotations

import datetime
from pathlib import Path

from ml_collections import ConfigDict

from scalelab import models
from scalelab.core.workdir import read_json
from scalelab.science import shapes
from scalelab import data as data_lib
from scalelab.sweep import points as points_lib

PREDICTION_KEYS = ('C', 'N_opt', 'D_opt', 'loss', 'loss_lo', 'loss_hi')


def prediction(sweep_dir: Path) -> dict:
    """prediction.json's content from a sweep's compute_optimal fit.json and sweep.json."""
    fit = read_json(sweep_dir / 'fit.json', 'refit it with `python -m scalelab.sweep fit --law compute_optimal`')
    if fit.get('law') != 'compute_optimal':
        raise ValueError(f'{sweep_dir / "fit.json"}: law {fit.get("law")!r}; a prediction needs --law compute_optimal')
    sweep = points_lib.from_dict(read_json(sweep_dir / 'sweep.json', 'rerun the sweep command to write it'))
    p = fit['prediction']
    base = points_lib.load_experiment(sweep.base)
    for key, value in sweep.overrides.items():
        points_lib.set_key(base, key, value)
    model = ConfigDict(base.model.to_dict())
    models.resolve(model, data_lib.spec(base.data))
    rule = ConfigDict({**sweep.shape.to_dict(), 'tolerance': max(sweep.shape.tolerance, 0.05)})
    solved = shapes.solve_transformer(p['N_opt'], model, rule)
    overrides = dict(sweep.overrides.items())
    overrides.update({f'model.{k}': solved[k] for k in ('d_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_ff')})
    overrides['train.flops'] = float(p['C'])
    n_trained = shapes.count(solved, rule)
    return {**{k: p[k] for k in PREDICTION_KEYS if k in p}, 'level': p['level'], 'metric': sweep.fit.metric,
            'N_opt_by_approach': p['N_opt_by_approach'], 'rule': p['rule'], 'warnings': p.get('warnings', []),
            'trained_shape': {'d_model': solved.d_model, 'n_layers': solved.n_layers, 'N': n_trained,
                              'D': p['C'] / (6 * n_trained), 'count': rule.count},
            'base': sweep.base, 'overrides': overrides,
            'command': points_lib.shell(points_lib.command(sweep.base, overrides, Path('runs') / 'verify')),
            'predicted_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def verification(predicted: dict, run_dir: Path) -> dict:
    """verification.json's content: the run's measured metric against the predicted interval."""
    summary = read_json(run_dir / 'summary.json', 'train the predicted run first')
    saved = read_json(run_dir / 'config.json', 'train the predicted run first')
    problems = [f'{key}={_get(saved, key)!r}, predicted {value!r}' for key, value in predicted['overrides'].items()
                if _differs(_get(saved, key), value)]
    if problems:
        raise ValueError(f'{run_dir}: not the predicted run: ' + '; '.join(problems))
    if summary.get('status') != 'completed':
        raise ValueError(f'{run_dir}: status {summary.get("status")!r}; the verification needs a completed run')
    loss = summary[predicted['metric']]
    out = {'loss': loss, 'metric': predicted['metric'], 'C': predicted['C'],
           'N': summary['params']['with_head'], 'D': summary['tokens'],
           'predicted': predicted['loss'], 'relative_error': predicted['loss'] / loss - 1,
           'wall_time_s': summary.get('wall_time_s'), 'run': str(run_dir)}
    if 'loss_lo' in predicted:
        out.update(loss_lo=predicted['loss_lo'], loss_hi=predicted['loss_hi'],
                   inside=bool(predicted['loss_lo'] <= loss <= predicted['loss_hi']))
    return out


def figure(measured: dict, sweep_dir: Path, run_dir: Path, path: Path) -> None:
    """verification.png: the prediction and its run beside the study it came from."""
    from scalelab.sweep import plots, results
    fit = read_json(sweep_dir / 'fit.json', 'refit it with `python -m scalelab.sweep fit --law compute_optimal`')
    data = results.table(results.read_csv(sweep_dir / 'results.csv'))
    plots.verification(measured, data, fit['approach3'], eval_curve(run_dir, measured['C']), path)


def eval_curve(run_dir: Path, C: float) -> list[tuple[float, float]]:
    """(compute so far, eval_loss) at each of the run's evaluations: C scaled by step / last step."""
    from scalelab.training import metrics
    records = [r for r in metrics.read_jsonl(run_dir / 'metrics.jsonl') if 'eval_loss' in r]
    last = max((r['step'] for r in records), default=1)
    return [(C * r['step'] / last, r['eval_loss']) for r in records]


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split('.'):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _differs(saved, wanted) -> bool:
    if isinstance(wanted, float) and isinstance(saved, (int, float)):
        return abs(saved - wanted) > 1e-9 * max(abs(wanted), 1.0)
    return saved != wanted
