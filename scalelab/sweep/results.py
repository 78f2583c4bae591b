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

from scalelab.core import files, tasks
from scalelab.core import workdir as workdir_lib
from scalelab.science import flops, isoflop, scaling, shapes
from scalelab.sweep import checks, runner
from scalelab.sweep import points as points_lib

FIXED_COLUMNS = ('name', 'status', 'N', 'N_with_head', 'N_total', 'N_embedding', 'D', 'C', 'C_counted', 'loss',
                 'train_loss', 'steps', 'd_model', 'n_layers', 'n_heads', 'wall_time_s', 'flop_convention', 'error')


def collect(sweep, points: list[points_lib.Point], workdir: Path) -> list[dict]:
    """One row per point; N is the count fit.count names, D the tokens trained, C = 6 N_with_head D."""
    if sweep.fit.count not in shapes.COUNTS:
        raise ValueError(f'fit.count={sweep.fit.count!r}: not one of {", ".join(shapes.COUNTS)}')
    rows = []
    for point in points:
        summary = runner.read_summary(runner.point_dir(workdir, point)) or {}
        failure = workdir_lib.read_exit(runner.point_dir(workdir, point))
        params = summary.get('params', {})
        model = point.config.model
        n_with_head, tokens = point.plan.param_counts['with_head'], summary.get('tokens')
        rows.append({
            'name': point.name, 'status': point_status(summary, failure),
            'error': None if failure is None or summary.get('status') in runner.FINAL_STATUSES else failure['error'],
            'N': point.plan.param_counts[sweep.fit.count], 'N_with_head': n_with_head,
            'N_total': params.get('total'), 'N_embedding': params.get('embedding'), 'D': tokens,
            'C': None if tokens is None else 6.0 * n_with_head * tokens, 'C_counted': summary.get('flops'),
            'flop_convention': flops.FLOP_CONVENTION,
            'loss': summary.get(sweep.fit.metric), 'train_loss': summary.get('train_loss'),
            'bits_per_byte': summary.get('eval_bits_per_byte'),
            'tokenizer': tokenizer_name(summary.get('data', {}).get('tokenizer')),
            'steps': summary.get('step'), 'd_model': model.d_model, 'n_layers': model.n_layers,
            'n_heads': model.n_heads, 'wall_time_s': summary.get('wall_time_s'),
            'attn_logit_max': summary.get('attn_logit_max'), 'uniform_loss': uniform_loss(point.plan.spec),
            **{metric: summary.get(metric) for metric in sweep.fit.also},
            **{key: value for key, value in summary.items() if key.startswith('downstream/')},  # task metrics
            **{key: value for key, value in point.axes.items()},
        })
    return rows


def point_status(summary: dict, failure: dict | None) -> str:
    """A finished run's status; else the latest attempt's recorded failure, with its exit code
    (a point run elsewhere, e.g. as a SLURM array task); else the summary's, or 'missing'."""
    if summary.get('status') in runner.FINAL_STATUSES or failure is None:
        return summary.get('status', 'missing')
    return f'failed (exit {failure["exit_code"]})'


def tokenizer_name(described) -> str | None:
    """A run's tokenizer as one CSV cell: 'bytes', or a prepared corpus's kind, name and vocabulary."""
    if isinstance(described, dict):
        return f'{described.get("kind", "")}:{described.get("name", "")}:{described.get("vocab_size", "")}'
    return described


def uniform_loss(spec) -> float | None:
    """ln(outputs): the loss of a uniform prediction, which a model at initialisation is near
    (lr_laws.lr_sensitivity's initial loss); None for regression."""
    return math.log(spec.num_outputs) if spec.task in tasks.LOGIT_TASKS else None


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(FIXED_COLUMNS) + [k for k in rows[0] if k not in FIXED_COLUMNS]
    files.write_csv(path, rows, columns)


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline='') as f:
        return list(csv.DictReader(f))


def table(rows: list[dict], *, n_col='N', d_col='D', c_col='C', loss_col='loss',
          drop_top_loss: int = 0, dropped: list | None = None, extra: tuple = ()) -> dict[str, np.ndarray]:
    """Numeric columns N, loss and (where available) D, C from CSV rows.

    Rows with a status other than 'completed', or without a finite positive
    N, loss, D or C (where those columns exist), are left out; then the
    `drop_top_loss` highest losses are. `dropped` (if given) receives
    (row label, reason) for each row left out. Each `extra` column comes along under
    its own name, required finite (zero and negative allowed: an accuracy of 0).
    """
    header = rows[0].keys() if rows else ()
    missing = [c for c in (n_col, loss_col, *extra) if c not in header]
    if missing:
        raise ValueError(f'results: no column {missing[0]!r}; columns are {", ".join(header)}')
    names = {'N': n_col, 'loss': loss_col, 'D': d_col, 'C': c_col}
    out = {k: np.array([number(r.get(col)) for r in rows]) for k, col in names.items() if col in header}
    also = {col: np.array([number(r.get(col)) for r in rows]) for col in extra}
    reasons = []
    for i, row in enumerate(rows):
        status = row.get('status', 'completed')
        bad = [f'{names[k]}={row.get(names[k])!r}' for k in out if not (np.isfinite(out[k][i]) and out[k][i] > 0)]
        bad_extra = [f'{col}={row.get(col)!r}' for col in extra if not np.isfinite(also[col][i])]
        reasons.append(f'status {status!r}' if status != 'completed' else
                       f'{", ".join(bad)} is not a finite positive number' if bad else
                       f'{", ".join(bad_extra)} is not a finite number' if bad_extra else '')
    keep = np.array([not r for r in reasons], bool)
    if dropped is not None:
        dropped += [(row_label(row, i), why) for i, (row, why) in enumerate(zip(rows, reasons)) if why]
    out = {k: v[keep] for k, v in {**out, **also}.items()}
    if drop_top_loss:
        order = np.argsort(out['loss'], kind='stable')[:len(out['loss']) - drop_top_loss]
        out = {k: v[np.sort(order)] for k, v in out.items()}
    if 'D' not in out and 'C' in out:
        out['D'] = out['C'] / (6 * out['N'])
    if 'C' not in out and 'D' in out:
        out['C'] = 6 * out['N'] * out['D']
    return out


def row_label(row: dict, index: int) -> str:
    """How a warning names a row: its point name, else its line in the CSV (header = line 1)."""
    return f'{row["name"]!r}' if row.get('name') else f'on line {index + 2}'


def number(text) -> float:
    """A CSV cell (or summary value) as a float; nan when it is empty or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


@dataclasses.dataclass
class Fit:
    report: dict            # what fit.json holds; report['warnings']: what it cannot promise
    law: object = None      # the fitted law
    laws: list = None       # bootstrap laws
    holdout: object = None  # law fitted without the largest N


def fit_table(data: dict[str, np.ndarray], law: str, *, bootstrap: int = 200, seed: int = 0,
              level: float = 0.9, dropped: list = (), **budget_options) -> Fit:
    """Fit `law` to a table; `dropped` (from `table`) becomes warnings naming each row left out;
    `budget_options` (tol, budgets, min_points) group an isoflop table's runs into budgets."""
    if law == 'power':
        fit = _fit_power(data, bootstrap, seed, level)
    elif law == 'chinchilla':
        _require(data, 'D', law)
        fit = _fit_chinchilla(data, bootstrap, seed, level)
    elif law == 'isoflop':
        _require(data, 'C', law)
        fit = _fit_isoflop(data, bootstrap, seed, level, **{'tol': 0.1, **budget_options})
    else:
        raise ValueError(f'--law={law!r}: not one of {", ".join(points_lib.LAWS)}')
    fit.report['warnings'] = checks.dropped(list(dropped)) + fit.report.get('warnings', [])
    return fit


def _require(data, column, law):
    if column not in data:
        raise ValueError(f'--law={law} needs a {column} column (or C and N to derive it)')


def with_bootstrap(report: dict, law, laws: list, failed: int, n_boot: int, level: float) -> list:
    """Adds the bootstrap's summary and warnings to `report`; returns the laws whose
    intervals may be reported ([] when the bootstrap failed or cannot vary)."""
    if not n_boot:
        return []
    stats = scaling.summarize(laws, level) if len(laws) > 1 else {}
    report['warnings'] += checks.bootstrap(law.params(), stats, n_boot, failed)
    if len(laws) < 2 or not checks.usable_bootstrap(n_boot, failed, stats, law.params()):
        return []
    report['bootstrap'] = {'resamples': n_boot, 'failed': failed, 'level': level, **stats}
    return laws


def _fit_power(data, n_boot, seed, level) -> Fit:
    N, loss = data['N'], data['loss']
    if np.ptp(N) == 0:
        raise ValueError(f'--law power fits L(N), and every row has N = {N[0]:,.0f}: it needs several model sizes. '
                         'For one model at several token counts (decay branches), fit L(D): '
                         'sweep fit --results results.csv --law power --n-col D')
    law, optima = scaling.fit_power_law(N, loss)
    report = {'law': 'power', 'formula': law.describe('N'), 'params': law.params(), 'rows': int(len(N)),
              'objective': law.objective, 'warnings': checks.degrees_of_freedom(len(N), 3, 'power')}
    report['warnings'] += checks.bounds(law) + checks.exponents(law.params())
    report['warnings'] += checks.flat(float(np.ptp(law.predict(N))), checks.scatter(loss, law.predict(N)))
    free = len(N) > 3
    laws = []
    if free and n_boot:
        laws, failed = scaling.bootstrap(scaling.fit_power_law, (N, loss), optima, n=n_boot, seed=seed)
        laws = with_bootstrap(report, law, laws, failed, n_boot, level)
    next_up = 10 * N.max()
    report['prediction'] = {'N': float(next_up), 'loss': float(law.predict(next_up))}
    if laws:
        lo, hi = scaling.prediction_interval(laws, next_up, level=level)
        report['prediction'].update(lo=float(lo), hi=float(hi))
    fit = Fit(report, law, laws)
    largest = N == N.max()
    if free and len(np.unique(N[~largest])) >= 4:
        held, held_optima = scaling.fit_power_law(N[~largest], loss[~largest])
        entry = {'N': float(N.max()), 'measured': float(loss[largest].mean()),
                 'predicted': float(held.predict(N.max())), 'params': held.params()}
        entry['relative_error'] = entry['predicted'] / entry['measured'] - 1
        if n_boot:
            held_laws, _ = scaling.bootstrap(scaling.fit_power_law, (N[~largest], loss[~largest]), held_optima,
                                             n=n_boot, seed=seed)
            if len(held_laws) > 1:
                lo, hi = scaling.prediction_interval(held_laws, N.max(), level=level)
                entry.update(lo=float(lo), hi=float(hi), inside=bool(lo <= entry['measured'] <= hi))
        report['holdout_largest'] = entry
        fit.holdout = held
    return fit


def _fit_chinchilla(data, n_boot, seed, level) -> Fit:
    N, D, loss = data['N'], data['D'], data['loss']
    law, optima = scaling.fit_chinchilla(N, D, loss)
    report = {'law': 'chinchilla', 'formula': law.describe(), 'params': law.params(), 'rows': int(len(N)),
              'objective': law.objective, 'G': law.G,
              'warnings': checks.degrees_of_freedom(len(N), 5, 'chinchilla')}
    report['warnings'] += checks.bounds(law) + checks.exponents(law.params())
    report['warnings'] += checks.flat(float(np.ptp(law.predict(N, D))), checks.scatter(loss, law.predict(N, D)))
    if len(N) <= 5:
        return Fit(report, law, [])
    laws = []
    if n_boot:
        laws, failed = scaling.bootstrap(scaling.fit_chinchilla, (N, D, loss), optima, n=n_boot, seed=seed)
        laws = with_bootstrap(report, law, laws, failed, n_boot, level)
    C_max = float((6 * N * D).max())
    report['compute_optimal'] = [optimal_point(law, laws, C, level) for C in (C_max, 10 * C_max, 100 * C_max)]
    return Fit(report, law, laws)


def optimal_point(law, laws: list, C: float, level: float) -> dict:
    """N_opt, D_opt and the loss there at budget C, with the bootstrap laws' central intervals."""
    n_opt, d_opt = law.optimal_allocation(C)
    entry = {'C': C, 'N_opt': float(n_opt), 'D_opt': float(d_opt), 'loss': float(law.predict(n_opt, d_opt))}
    if laws:
        allocations = np.array([other.optimal_allocation(C) for other in laws])
        losses = [other.predict(*alloc) for other, alloc in zip(laws, allocations)]
        for key, values in (('N_opt', allocations[:, 0]), ('D_opt', allocations[:, 1]), ('loss', losses)):
            entry[f'{key}_lo'], entry[f'{key}_hi'] = scaling.central_interval(values, level)
    return entry


def _fit_isoflop(data, n_boot, seed, level, **options) -> Fit:
    iso = isoflop.fit_isoflop(data['N'], data['C'], data['loss'], data.get('D'), **options)
    report = {'law': 'isoflop', 'formula': iso.describe(), 'params': iso.params(),
              'budgets': [b.to_dict() for b in iso.budgets], 'rows': int(len(data['N'])),
              'rows_in_no_budget': iso.unassigned, 'budget_tol_decades': options['tol'],
              'warnings': list(iso.warnings)}
    report['warnings'] += checks.exponents(iso.params())
    fits = []
    if n_boot and len(iso.used()) > 2:
        fits, failed = isoflop.bootstrap(data['N'], data['C'], data['loss'], data.get('D'), n=n_boot, seed=seed,
                                         **options)
        fits = with_bootstrap(report, iso, fits, failed, n_boot, level)
    return Fit(report, iso, fits)
