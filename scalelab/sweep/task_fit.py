"""`sweep fit --law task`: the OLMo ladder's two steps (science/task_law.py) fitted to a
results table's `downstream/<task>/bpb` and `downstream/<task>/<metric>` columns, with the
checks other fits get, and tested on the largest-compute point held out: fitted on the
rest, its bpb and accuracy predicted with bootstrap intervals (the accuracy's widened by
the binomial noise of measuring it on n documents), then compared with what it measured.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from scalelab.science import scaling, task_law
from scalelab.sweep import checks, results

METRICS = ('acc', 'acc_per_char')
NOISE_P = 0.05   # accuracy whose trend with bpb is less significant than this did not move


def columns(task: str, metric: str) -> tuple[str, str, str]:
    if metric not in METRICS:
        raise ValueError(f'--task-metric={metric!r}: not one of {", ".join(METRICS)}')
    return f'downstream/{task}/bpb', f'downstream/{task}/{metric}', f'downstream/{task}/n'


def table(rows: list[dict], task: str, metric: str, dropped: list, **cols) -> dict[str, np.ndarray]:
    bpb_col, acc_col, n_col = columns(task, metric)
    header = rows[0].keys() if rows else ()
    if bpb_col not in header:
        found = sorted({k.split('/')[1] for k in header if k.startswith('downstream/')})
        raise ValueError(f'--task={task!r}: the table has no {bpb_col!r} column; its tasks: '
                         f'{", ".join(found) or "none (score the runs with eval.downstream_tasks or python -m scalelab.downstream)"}')
    data = results.table(rows, loss_col=bpb_col, extra=(acc_col, n_col), dropped=dropped, **cols)
    data['acc'], data['n'] = data.pop(acc_col), data.pop(n_col)
    return data


def noise_warnings(bpb: np.ndarray, acc: np.ndarray, metric: str) -> list[str]:
    """Accuracy with no significant monotone trend in bpb (Spearman, one-sided at NOISE_P):
    then step 2 is fitted to noise. A trend test, not a spread test: every run is scored on
    the same documents, so their accuracies differ by less than each one's binomial error."""
    rho, p = stats.spearmanr(bpb, acc, alternative='less')  # accuracy should rise as bpb falls
    if p < NOISE_P:
        return []
    return [f'{metric} shows no significant trend with bpb across the runs (Spearman rho = {rho:.2f}, one-sided '
            f'p = {p:.2f}; it spans {np.ptp(acc):.3f}): step 2 is fitted to noise, so read the bpb prediction, not '
            'the accuracy one']


SIGMOID_MEANING = {
    'a lower': 'no rise: accuracy does not follow bpb',
    'k upper': 'k -> 0: a flat line, accuracy does not follow bpb',
    'k lower': 'the steepest step the search allows: a jump between two runs, not a curve',
    'L0 lower': 'the midpoint lies far beyond the data: only one tail of the sigmoid is seen',
    'L0 upper': 'the midpoint lies far beyond the data: only one tail of the sigmoid is seen',
}
VANISHED = 1e-3   # a term below this share of the smallest bpb has vanished


def law_checks(law: task_law.TaskLaw, data: dict) -> list[str]:
    lines = checks.bounds(law.loss) + checks.exponents(law.loss.params())
    if law.loss.E < VANISHED * data['loss'].min() and not any(e.startswith('E ') for e in law.loss.at_bounds):
        lines.append(f'E = {law.loss.E:.3g}, below {VANISHED:g} of the smallest bpb: the data do not resolve an '
                     'irreducible task loss')
    lines += checks.flat(float(np.ptp(law.loss.predict(data['N'], data['D']))),
                         checks.scatter(data['loss'], law.loss.predict(data['N'], data['D'])))
    for edge in law.accuracy.at_bounds:
        name, side = edge.split()
        lines.append(f'sigmoid {name} = {law.accuracy.params()[name]:.4g} is at the {side} bound of its search'
                     + (f' ({SIGMOID_MEANING[edge]})' if edge in SIGMOID_MEANING else ''))
    return lines


def fit(data: dict[str, np.ndarray], task: str, metric: str = 'acc', *, bootstrap: int = 200, seed: int = 0,
        level: float = 0.9, dropped: list = ()) -> results.Fit:
    """The task law on `data` (from `table`); `dropped` (also from `table`) becomes warnings."""
    N, D, bpb, acc = data['N'], data['D'], data['loss'], data['acc']
    report = {'law': 'task', 'task': task, 'metric': metric, 'rows': int(len(N)),
              'warnings': checks.dropped(list(dropped)) + checks.degrees_of_freedom(len(N), 5, 'task bpb (step 1)')}
    if len(N) < 5:
        raise ValueError(f'--law task: {len(N)} usable rows; step 1 needs at least 5 (step 2, 5 as well)')
    law, optima = task_law.fit_task_law(N, D, bpb, acc)
    report.update(formula=law.describe(), params=law.params(), objective=law.loss.objective)
    report['warnings'] += law_checks(law, data) + noise_warnings(bpb, acc, metric)
    laws = []
    if bootstrap and len(N) > 5:
        laws, failed = scaling.bootstrap(task_law.fit_task_law, (N, D, bpb, acc), optima, n=bootstrap, seed=seed)
        laws = results.with_bootstrap(report, law, laws, failed, bootstrap, level)
    out = results.Fit(report, law, laws)
    largest = np.argmax(6 * N * D)
    rest = np.arange(len(N)) != largest
    if rest.sum() > 5:
        out.holdout, report['holdout_largest'] = holdout(data, rest, largest, bootstrap, seed, level)
    return out


def holdout(data: dict, rest: np.ndarray, largest: int, n_boot: int, seed: int, level: float):
    """(the law without the largest-compute row, its prediction of that row against the measurement)."""
    N, D, bpb, acc = (data[k][rest] for k in ('N', 'D', 'loss', 'acc'))
    law, optima = task_law.fit_task_law(N, D, bpb, acc)
    at = (data['N'][largest], data['D'][largest])
    predicted_bpb, predicted_acc = (float(v) for v in law.predict(*at))
    measured_acc, docs = float(data['acc'][largest]), int(data['n'][largest])
    entry = {'N': float(at[0]), 'D': float(at[1]), 'C': float(6 * at[0] * at[1]),
             'measured_bpb': float(data['loss'][largest]), 'predicted_bpb': predicted_bpb,
             'measured_acc': measured_acc, 'predicted_acc': predicted_acc, 'documents': docs,
             'acc_measurement_se': task_law.binomial_se(predicted_acc, docs)}
    entry['bpb_relative_error'] = predicted_bpb / entry['measured_bpb'] - 1
    if n_boot:
        laws, _ = scaling.bootstrap(task_law.fit_task_law, (N, D, bpb, acc), optima, n=n_boot, seed=seed)
        if len(laws) > 1:
            draws = np.array([other.predict(*at) for other in laws], float)
            rng = np.random.default_rng(seed)
            measured_draws = draws[:, 1] + rng.normal(0, 1, len(draws)) * np.array(
                [task_law.binomial_se(float(np.clip(a, 0, 1)), docs) for a in draws[:, 1]])
            entry['bpb_lo'], entry['bpb_hi'] = scaling.central_interval(draws[:, 0], level)
            entry['acc_lo'], entry['acc_hi'] = scaling.central_interval(measured_draws, level)
            entry['bpb_inside'] = bool(entry['bpb_lo'] <= entry['measured_bpb'] <= entry['bpb_hi'])
            entry['acc_inside'] = bool(entry['acc_lo'] <= measured_acc <= entry['acc_hi'])
    return law, entry
