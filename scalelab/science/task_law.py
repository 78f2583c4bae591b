"""Task scaling laws, the two steps of the OLMo ladder (Bhagia et al. 2024):

    step 1   bpb(N, D) = E + A / N^alpha + B / D^beta          task loss: the gold answer's bits per byte
    step 2   acc(bpb)  = a / (1 + exp(-k (bpb - L0))) + b      accuracy from task loss (k < 0)

Step 1 is Chinchilla's form, fitted as scaling.fit_chinchilla fits any loss; step 2 is a
sigmoid fitted by least squares from a grid of starts inside bounds that keep it an
accuracy (a, b in [0, 1], a + b <= 1 is not forced: b is the floor, a the rise). A
prediction chains them: the sigmoid read at the bpb step 1 predicts.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from scalelab.science import scaling

SIGMOID_THETA = ('a', 'k', 'L0', 'b')
K_RANGE = (-50.0, 0.0)
L0_MARGIN = 5.0   # L0 may sit this many bits per byte outside the data's range


@dataclasses.dataclass(frozen=True)
class Sigmoid:
    a: float
    k: float
    L0: float
    b: float
    at_bounds: tuple[str, ...] = ()

    def predict(self, bpb):
        return self.a / (1.0 + np.exp(-self.k * (np.asarray(bpb, float) - self.L0))) + self.b

    def params(self) -> dict[str, float]:
        return {'a': self.a, 'k': self.k, 'L0': self.L0, 'b': self.b}


def sigmoid_bounds(bpb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([0.0, K_RANGE[0], bpb.min() - L0_MARGIN, 0.0])
    hi = np.array([1.0, K_RANGE[1], bpb.max() + L0_MARGIN, 1.0])
    return lo, hi


def fit_sigmoid(bpb, acc) -> Sigmoid:
    """Least squares from a grid of (k, L0) starts; the best of them."""
    bpb, acc = np.asarray(bpb, float), np.asarray(acc, float)
    if len(bpb) < 5:
        raise ValueError(f'fit_sigmoid: need at least 5 points for 4 parameters, got {len(bpb)}')
    lo, hi = sigmoid_bounds(bpb)
    residual = lambda theta: Sigmoid(*theta).predict(bpb) - acc
    best = None
    for k in (-0.5, -2.0, -8.0):
        for L0 in np.quantile(bpb, [0.1, 0.5, 0.9]):
            start = np.clip([max(np.ptp(acc), 1e-3), k, L0, acc.min()], lo + 1e-9, hi - 1e-9)
            found = optimize.least_squares(residual, start, bounds=(lo, hi), method='trf')
            if best is None or found.cost < best.cost:
                best = found
    span = hi - lo
    edge = [f'{name} {"lower" if v - l <= 1e-6 * s else "upper"}'
            for name, v, l, h, s in zip(SIGMOID_THETA, best.x, lo, hi, span)
            if v - l <= 1e-6 * s or h - v <= 1e-6 * s]
    return Sigmoid(*(float(v) for v in best.x), at_bounds=tuple(edge))


@dataclasses.dataclass(frozen=True)
class TaskLaw:
    loss: scaling.Chinchilla      # step 1: task bpb from N and D
    accuracy: Sigmoid             # step 2: accuracy from task bpb

    def predict(self, N, D):
        """(bpb, accuracy) at (N, D)."""
        bpb = self.loss.predict(N, D)
        return bpb, self.accuracy.predict(bpb)

    def params(self) -> dict[str, float]:
        return {**self.loss.params(), **{f'sigmoid_{k}': v for k, v in self.accuracy.params().items()}}

    def describe(self) -> str:
        s = self.accuracy
        return (f'bpb(N, D) = {self.loss.E:.4g} + {self.loss.A:.4g} / N^{self.loss.alpha:.4f} + '
                f'{self.loss.B:.4g} / D^{self.loss.beta:.4f}; '
                f'acc(bpb) = {s.a:.3g} / (1 + exp({-s.k:.3g} (bpb - {s.L0:.4g}))) + {s.b:.3g}')


def fit_task_law(N, D, bpb, acc, starts: np.ndarray | None = None) -> tuple[TaskLaw, list]:
    """Both steps; returns the law and step 1's distinct optima (what a bootstrap starts from)."""
    loss_law, optima = scaling.fit_chinchilla(N, D, bpb, starts=starts)
    return TaskLaw(loss_law, fit_sigmoid(bpb, acc)), optima


def binomial_se(acc: float, n: int) -> float:
    """The standard error of an accuracy measured on n documents."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / n) if n else math.nan
