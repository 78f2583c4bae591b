"""results.csv from the points' summaries, and fits of any such table.

A table is columns of numbers: N (parameters), loss, and D (tokens) or C
(FLOPs) where the law needs them; D = C / 6N or C = 6ND fills the other.
A sweep's own table follows flops.FLOP_CONVENTION, recorded in its
flop_convention column: N counts the output head (fit.count='with_head'), D is
the tokens each point trained, C = 6 N D; the counted FLOPs (attention included,
for MFU) are the separate C_counted column, never fitted.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from scalelab import data as data_lib
from scalelab import files, flops, scaling, shapes, tasks
from scalelab.sweep import points as points_lib
from scalelab.sweep import runner

FIXED_COLUMNS = ('name', 'status', 'N', 'N_with_head', 'N_total', 'N_embedding', 'D', 'C', 'C_counted', 'loss',
                 'train_loss', 'steps', 'd_model', 'n_layers', 'n_heads', 'wall_time_s', 'flop_convention')


def collect(sweep, points: list[points_lib.Point], workdir: Path) -> list[dict]:
    """One row per point; N is the count fit.count names, D the tokens trained, C = 6 N_with_head D."""
    if sweep.fit.count not in shapes.COUNTS:
        raise ValueError(f'fit.count={sweep.fit.count!r}: not one of {", ".join(shapes.COUNTS)}')
    rows = []
    for point in points:
        summary = runner.read_summary(runner.point_dir(workdir, point)) or {}
        params = summary.get('params', {})
        model = point.config.model
        n_with_head, tokens = points_lib.count(point.config, 'with_head'), summary.get('tokens')
        rows.append({
            'name': point.name, 'status': summary.get('status', 'missing'),
            'N': points_lib.count(point.config, sweep.fit.count), 'N_with_head': n_with_head,
            'N_total': params.get('total'), 'N_embedding': params.get('embedding'), 'D': tokens,
            'C': None if tokens is None else 6.0 * n_with_head * tokens, 'C_counted': summary.get('flops'),
            'flop_convention': flops.FLOP_CONVENTION,
            'loss': summary.get(sweep.fit.metric), 'train_loss': summary.get('train_loss'),
            'steps': summary.get('step'), 'd_model': model.d_model, 'n_layers': model.n_layers,
            'n_heads': model.n_heads, 'wall_time_s': summary.get('wall_time_s'),
            'attn_logit_max': summary.get('attn_logit_max'), 'uniform_loss': uniform_loss(point.config),
            **{metric: summary.get(metric) for metric in sweep.fit.also},
            **{key: value for key, value in point.axes.items()},
        })
    return rows


def uniform_loss(cfg) -> float | None:
    """ln(outputs): the loss of a uniform prediction, which a model at initialisation is near
    (lr_laws.lr_sensitivity's initial loss); None for regression."""
    spec = data_lib.spec(cfg.data)
    return math.log(spec.num_outputs) if spec.task in tasks.LOGIT_TASKS else None


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(FIXED_COLUMNS) + [k for k in rows[0] if k not in FIXED_COLUMNS]
    files.write_csv(path, rows, columns)


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline='') as f:
        return list(csv.DictReader(f))


def table(rows: list[dict], *, n_col='N', d_col='D', c_col='C', loss_col='loss',
          drop_top_loss: int = 0) -> dict[str, np.ndarray]:
    """Numeric columns N, loss and (where available) D, C from CSV rows.

    Rows with a status other than 'completed', or without a finite positive
    loss and N, are left out; then the `drop_top_loss` highest losses are.
    """
    header = rows[0].keys() if rows else ()
    missing = [c for c in (n_col, loss_col) if c not in header]
    if missing:
        raise ValueError(f'results: no column {missing[0]!r}; columns are {", ".join(header)}')

    def column(name):
        if name not in header:
            return None
        return np.array([number(r.get(name)) for r in rows])

    keep = np.array([r.get('status', 'completed') == 'completed' for r in rows])
    out = {'N': column(n_col), 'loss': column(loss_col), 'D': column(d_col), 'C': column(c_col)}
    for name in ('N', 'loss'):
        keep &= np.isfinite(out[name]) & (out[name] > 0)
    out = {k: v[keep] for k, v in out.items() if v is not None}
    if drop_top_loss:
        order = np.argsort(out['loss'], kind='stable')[:len(out['loss']) - drop_top_loss]
        out = {k: v[np.sort(order)] for k, v in out.items()}
    if 'D' not in out and 'C' in out:
        out['D'] = out['C'] / (6 * out['N'])
    if 'C' not in out and 'D' in out:
        out['C'] = 6 * out['N'] * out['D']
    return out


def number(text) -> float:
    """A CSV cell (or summary value) as a float; nan when it is empty or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


@dataclasses.dataclass
class Fit:
    report: dict            # what fit.json holds
    law: object = None      # the fitted law
    laws: list = None       # bootstrap laws
    holdout: object = None  # law fitted without the largest N


def fit_table(data: dict[str, np.ndarray], law: str, *, bootstrap: int = 200, seed: int = 0,
              level: float = 0.9) -> Fit:
    if law == 'power':
        return _fit_power(data, bootstrap, seed, level)
    if law == 'chinchilla':
        _require(data, 'D', law)
        return _fit_chinchilla(data, bootstrap, seed, level)
    if law == 'isoflop':
        _require(data, 'C', law)
        iso = scaling.fit_isoflop(data['N'], data['C'], data['loss'], data.get('D'))
        return Fit({'law': 'isoflop', 'formula': iso.describe(), 'params': iso.params(),
                    'budgets': iso.budgets, 'rows': int(len(data['N']))}, law=iso)
    raise ValueError(f'--law={law!r}: not one of {", ".join(points_lib.LAWS)}')


def _require(data, column, law):
    if column not in data:
        raise ValueError(f'--law={law} needs a {column} column (or C and N to derive it)')


def _fit_power(data, n_boot, seed, level) -> Fit:
    N, loss = data['N'], data['loss']
    law, optima = scaling.fit_power_law(N, loss)
    laws = scaling.bootstrap(scaling.fit_power_law, (N, loss), optima, n=n_boot, seed=seed) if n_boot else []
    report = {'law': 'power', 'formula': law.describe('N'), 'params': law.params(), 'rows': int(len(N)),
              'objective': law.objective}
    if laws:
        report['bootstrap'] = {'resamples': n_boot, 'level': level, **scaling.summarize(laws, level)}
        next_up = 10 * N.max()
        lo, hi = scaling.prediction_interval(laws, next_up, level=level)
        report['prediction'] = {'N': float(next_up), 'loss': float(law.predict(next_up)),
                                'lo': float(lo), 'hi': float(hi)}
    fit = Fit(report, law, laws)
    largest = N == N.max()
    if len(np.unique(N[~largest])) >= 4:
        held, held_optima = scaling.fit_power_law(N[~largest], loss[~largest])
        entry = {'N': float(N.max()), 'measured': float(loss[largest].mean()),
                 'predicted': float(held.predict(N.max())), 'params': held.params()}
        entry['relative_error'] = entry['predicted'] / entry['measured'] - 1
        if n_boot:
            held_laws = scaling.bootstrap(scaling.fit_power_law, (N[~largest], loss[~largest]), held_optima,
                                          n=n_boot, seed=seed)
            lo, hi = scaling.prediction_interval(held_laws, N.max(), level=level)
            entry.update(lo=float(lo), hi=float(hi), inside=bool(lo <= entry['measured'] <= hi))
        report['holdout_largest'] = entry
        fit.holdout = held
    return fit


def _fit_chinchilla(data, n_boot, seed, level) -> Fit:
    N, D, loss = data['N'], data['D'], data['loss']
    law, optima = scaling.fit_chinchilla(N, D, loss)
    laws = scaling.bootstrap(scaling.fit_chinchilla, (N, D, loss), optima, n=n_boot, seed=seed) if n_boot else []
    report = {'law': 'chinchilla', 'formula': law.describe(), 'params': law.params(), 'rows': int(len(N)),
              'objective': law.objective, 'G': law.G}
    if laws:
        report['bootstrap'] = {'resamples': n_boot, 'level': level, **scaling.summarize(laws, level)}
    C_max = float((6 * N * D).max())
    report['compute_optimal'] = []
    for C in (C_max, 10 * C_max, 100 * C_max):
        n_opt, d_opt = law.optimal_allocation(C)
        report['compute_optimal'].append({'C': C, 'N_opt': float(n_opt), 'D_opt': float(d_opt),
                                          'loss': float(law.predict(n_opt, d_opt))})
    return Fit(report, law, laws)


