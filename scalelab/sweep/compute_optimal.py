"""All three of Chinchilla's approaches on one sweep's runs, side by side, and the
prediction they make for a budget 10 times the largest one.

- Approach 1 (envelope.py): the lowest loss along every run's curve at each compute;
- Approach 2 (isoflop.py): a parabola per budget, a power law through the vertices;
- Approach 3 (scaling.py): L(N, D) = E + A/N^alpha + B/D^beta on every run's final loss.

Each gives N_opt ∝ C^a and D_opt ∝ C^b with a bootstrap interval. The prediction trains
the size their consensus picks (the geometric mean of the three N_opt) on D = C / 6N, and
its loss and interval come from Approach 3: the bootstrap laws' spread plus the fit's own
residual scatter (a run's seed noise and misfit, which no refit removes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from scalelab.science import envelope, scaling
from scalelab.sweep import checks, results
from scalelab.training import metrics

APPROACHES = ('approach1', 'approach2', 'approach3')
PREDICT_AT = 10.0  # x the largest budget
MOSTLY_E = 0.8     # a predicted loss at least this share irreducible rests on E more than on the data's trend


def curves(rows: list[dict], points_dir: Path, metric: str, n_col: str = 'N') -> list[envelope.Curve]:
    """Each completed point's `metric` curve ('eval_loss' or the training 'loss') against C = 6 N D(t)."""
    out = []
    for row in rows:
        path = points_dir / row['name']
        if row.get('status') != 'completed' or not (path / 'metrics.jsonl').exists():
            continue
        series = metrics.curves(path, 'tokens')['eval' if metric == 'eval_loss' else 'train']
        tokens, loss = series
        keep = np.isfinite(loss) & (tokens > 0)
        N = results.number(row[n_col])
        out.append(envelope.Curve(row['name'], N, 6 * N * tokens[keep], loss[keep]))
    return out


def fit(rows: list[dict], data: dict[str, np.ndarray], points_dir: Path, *, bootstrap: int, seed: int = 0,
        level: float = 0.9, metric: str = 'eval_loss', dropped: list = (), n_col: str = 'N',
        **budget_options) -> results.Fit:
    """The three approaches on `data` (the table) and `points_dir` (the runs' curves)."""
    if not points_dir.is_dir():
        raise ValueError(f'--law=compute_optimal needs the runs\' metrics.jsonl: no {points_dir} beside the table '
                         '(give a sweep\'s own results.csv)')
    report = {'law': 'compute_optimal', 'rows': int(len(data['N'])), 'warnings': checks.dropped(list(dropped))}
    three = results.fit_table(data, 'chinchilla', bootstrap=bootstrap, seed=seed, level=level)
    two = results.fit_table(data, 'isoflop', bootstrap=bootstrap, seed=seed, level=level, **budget_options)
    run_curves = curves(rows, points_dir, metric, n_col)
    one_law = envelope.fit_envelope(run_curves)
    one_laws, one_failed = envelope.bootstrap(run_curves, n=bootstrap, seed=seed) if bootstrap else ([], 0)
    one = results.Fit({'law': 'envelope', 'formula': one_law.describe(), 'params': one_law.params(),
                       'runs': len(run_curves), 'curve_metric': metric, 'warnings': [],
                       'C_range': [float(one_law.C[0]), float(one_law.C[-1])],
                       'sizes_on_envelope': sorted({float(n) for n in one_law.N})}, one_law)
    one.laws = results.with_bootstrap(one.report, one_law, one_laws, one_failed, bootstrap, level)
    fits = dict(zip(APPROACHES, (one, two, three)))
    for name, f in fits.items():
        report[name] = f.report
        report['warnings'] += [f'{name}: {w}' for w in f.report['warnings']]
    C_max = float(data['C'].max())
    report['comparison'] = [compare_row(name, f, C, level) for name, f in fits.items()
                            for C in (C_max, PREDICT_AT * C_max)]
    report['prediction'] = predict(fits, PREDICT_AT * C_max, data, level, seed)
    report['warnings'] += report['prediction']['warnings']
    return results.Fit(report, fits)


def exponents(law) -> dict[str, float]:
    """a and b of any approach's law (Approach 3's follow from alpha and beta)."""
    if hasattr(law, 'a'):
        return {'a': law.a, 'b': law.b}
    return {'a': law.beta / (law.alpha + law.beta), 'b': law.alpha / (law.alpha + law.beta)}


def compare_row(name: str, fit: results.Fit, C: float, level: float) -> dict:
    """One approach's exponents and allocation at C, with bootstrap intervals."""
    n_opt, d_opt = fit.law.optimal_allocation(C)
    row = {'approach': name, 'C': C, **exponents(fit.law), 'N_opt': float(n_opt), 'D_opt': float(d_opt),
           'tokens_per_param': float(d_opt / n_opt)}
    if fit.laws:
        boot = [exponents(law) for law in fit.laws]
        allocations = np.array([law.optimal_allocation(C) for law in fit.laws])
        for key, values in (('a', [e['a'] for e in boot]), ('b', [e['b'] for e in boot]),
                            ('N_opt', allocations[:, 0]), ('D_opt', allocations[:, 1]),
                            ('tokens_per_param', allocations[:, 1] / allocations[:, 0])):
            row[f'{key}_lo'], row[f'{key}_hi'] = scaling.central_interval(values, level)
    return row


def predict(fits: dict[str, results.Fit], C: float, data: dict[str, np.ndarray], level: float, seed: int) -> dict:
    """N_opt = the geometric mean of the approaches' N_opt at C; D_opt = C / 6 N_opt; the loss
    from Approach 3 there, its interval from the bootstrap laws with the fit's residual scatter
    added in log space."""
    each = {name: float(f.law.optimal_allocation(C)[0]) for name, f in fits.items()}
    n_opt = float(np.exp(np.mean(np.log(list(each.values())))))
    d_opt = C / (6 * n_opt)
    loss = loss_interval(fits['approach3'], n_opt, d_opt, data, level, seed)
    return {'C': C, 'N_opt': n_opt, 'D_opt': d_opt, **loss,
            'E_share': fits['approach3'].law.E / loss['loss'],
            'warnings': mostly_e(fits['approach3'].law.E, loss['loss'], data['C']),
            'N_opt_by_approach': each, 'level': level,
            'rule': 'N_opt: geometric mean of the three approaches at C; D_opt = C / 6 N_opt; loss: Approach 3, '
                    'interval = bootstrap laws + residual scatter'}


def mostly_e(E: float, loss: float, C: np.ndarray) -> list[str]:
    """A prediction that is mostly the fit's irreducible loss leans on E, which a few decades
    of compute resolve poorly; the bootstrap interval carries the points' noise, not that."""
    if not E >= MOSTLY_E * loss:
        return []
    return [f'the predicted loss {loss:.4g} is {E / loss:.0%} the fit\'s irreducible loss E = {E:.4g}: it rests on '
            f'E, which {np.log10(C.max() / C.min()):.1f} decades of compute resolve poorly, and its interval does '
            'not carry that (a law still falling at the largest budget makes E, and the prediction, too high)']


def loss_interval(three: results.Fit, N: float, D: float, data: dict[str, np.ndarray], level: float,
                  seed: int) -> dict:
    """Approach 3's loss at (N, D), and the central `level` interval of its bootstrap laws'
    predictions each multiplied by exp(noise), noise ~ Normal(0, the fit's log-residual scatter)."""
    law = three.law
    residuals = np.log(data['loss']) - np.log(law.predict(data['N'], data['D']))
    sigma = float(np.sqrt(np.sum(residuals ** 2) / max(len(residuals) - 5, 1)))
    out = {'loss': float(law.predict(N, D)), 'residual_scatter_log': sigma}
    if three.laws:
        rng = np.random.default_rng(seed)
        draws = np.repeat([other.predict(N, D) for other in three.laws], 50)
        draws = draws * np.exp(rng.normal(0.0, sigma, size=len(draws)))
        out['loss_lo'], out['loss_hi'] = scaling.central_interval(draws, level)
    return out
