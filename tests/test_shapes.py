"""The shape solver hits parameter targets and says clearly when it cannot."""
import math

import numpy as np
import pytest

from scalelab import models
from scalelab.models import transformer
from scalelab.science import shapes
from scalelab.training import config


@pytest.fixture
def base():
    model = config.base_config().model
    models.family('transformer').resolve(model)
    return model


@pytest.mark.parametrize('target', np.geomspace(1e5, 3e9, 12))  # below 1e5, head_dim 32 is too coarse
def test_hits_every_target_within_tolerance(base, target):
    rule = shapes.default_rule()
    model = shapes.solve_transformer(float(target), base, rule)
    count = transformer.param_counts(model)['non_embedding']  # hand formula, independent of the solver's search
    assert abs(count / target - 1) <= 0.05
    assert model.d_model % rule.head_dim == 0 and model.n_heads * rule.head_dim == model.d_model
    if target >= 1e7:  # wide enough that the aspect ratio can be honoured closely
        assert abs(math.log(model.d_model / model.n_layers / rule.aspect_ratio)) < math.log(1.6)


def test_total_count_rule_counts_embeddings(base):
    rule = shapes.default_rule()
    rule.count = 'total'
    model = shapes.solve_transformer(2e6, base, rule)
    assert abs(transformer.param_counts(model)['total'] / 2e6 - 1) <= 0.05


@pytest.mark.parametrize('target, message', [
    (100.0, r'target_params=100: no transformer with head_dim=32 .* within 5%; nearest: 12,384'),
    (-5.0, r'target_params=-5.0: must be a positive number'),
    (float('nan'), r'target_params=nan: must be a positive number'),
])
def test_rejects_impossible_targets(base, target, message):
    with pytest.raises(ValueError, match=message):
        shapes.solve_transformer(target, base, shapes.default_rule())
