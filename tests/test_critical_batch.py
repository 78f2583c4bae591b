"""The critical batch's measurement: E(B) = E_min (1 + B / B_crit) recovered by hand, and the
examples a loss curve needs to reach a target."""
import math

import numpy as np
import pytest

from scalelab.science import critical_batch


def test_the_tradeoff_line_gives_back_its_critical_batch():
    batch = np.array([8, 16, 32, 64, 128])
    examples = 2e5 * (1 + batch / 40.0)  # E_min 2e5, B_crit 40: S_min = 5000 steps
    fit = critical_batch.fit_tradeoff(batch, examples)
    assert fit['B_crit'] == pytest.approx(40.0) and fit['E_min'] == pytest.approx(2e5) and fit['S_min'] == pytest.approx(5000)
    with_gap = critical_batch.fit_tradeoff(batch, np.append(examples[:-1], np.nan))  # a batch that never got there
    assert with_gap['B_crit'] == pytest.approx(40.0) and with_gap['points'] == 4
    assert math.isnan(critical_batch.fit_tradeoff([8, 16], [2e5, 1e5])['B_crit'])  # falling: no tradeoff
    with pytest.raises(ValueError, match='need examples-to-target at 2 or more batch sizes, got 1'):
        critical_batch.fit_tradeoff([8, 16], [1.0, np.nan])


def test_examples_to_reach_a_loss_use_a_running_mean():
    examples = np.arange(1, 8) * 100.0
    loss = np.array([5.0, 4.0, 2.9, 3.6, 3.0, 2.8, 2.7])  # one early dip below 3
    assert critical_batch.examples_to_reach(examples, loss, 3.0, smooth=1) == 300.0
    # means of three: 3.97, 3.5, 3.17, 3.13, 2.83 -> the window ending at 700
    assert critical_batch.examples_to_reach(examples, loss, 3.0, smooth=3) == 700.0
    assert math.isnan(critical_batch.examples_to_reach(examples, loss, 1.0))
