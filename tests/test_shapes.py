"""The shape solver hits parameter targets and says clearly when it cannot."""
import math
import re

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


def test_grouped_query_attention_keeps_its_group_size(base):
    """A model with 4 query heads per kv head keeps that ratio at every solved width; one
    without n_kv_heads gets one kv head per query head."""
    base.update(n_heads=8, n_kv_heads=2)
    model = shapes.solve_transformer(2e7, base, shapes.default_rule())
    assert model.n_heads >= 8 and model.n_kv_heads == model.n_heads // 4
    base.n_kv_heads = None
    model = shapes.solve_transformer(2e7, base, shapes.default_rule())
    assert model.n_kv_heads == model.n_heads


def test_the_with_head_count_is_non_embedding_plus_the_output_matrix(base):
    base.update(vocab_size=256, tie_embeddings=False)
    rule = shapes.default_rule()
    rule.count = 'with_head'
    model = shapes.solve_transformer(1e6, base, rule)
    with_head = transformer.param_counts(model)['non_embedding'] + model.d_model * 256   # the head, by hand
    assert shapes.count(model, rule) == with_head
    rule.count = 'non_embedding'
    assert shapes.count(model, rule) == with_head - model.d_model * 256
    assert abs(with_head / 1e6 - 1) <= 0.05


def test_the_width_search_brackets_its_target_by_adjacent_multiples(base):
    """Widths come back as the two multiples of head_dim around the target: below the smallest
    width, the smallest alone; a target hit exactly at 4 heads, 3 and 4 heads."""
    rule = shapes.default_rule()

    def n_at(heads):
        return shapes.count(shapes.shape_for(base, 2, heads * rule.head_dim, rule), rule)

    assert shapes._widths_near(1.0, 2, base, rule) == [rule.head_dim]
    assert shapes._widths_near(float(n_at(4)), 2, base, rule) == [3 * rule.head_dim, 4 * rule.head_dim]
    assert shapes._widths_near(float(n_at(6)), 2, base, rule) == [5 * rule.head_dim, 6 * rule.head_dim]
    lo, hi = shapes._widths_near(5e6, 2, base, rule)
    assert hi - lo == rule.head_dim and n_at(lo // rule.head_dim) < 5e6 <= n_at(hi // rule.head_dim)


def test_an_unreachable_target_stops_widening_past_two_to_the_sixteen_heads(base):
    """The search doubles the number of heads until past 2^16 and then gives up with the nearest
    shapes named: the widest it tried, 2^17 heads, is
    among them."""
    rule = shapes.default_rule()
    rule.max_layers = 1
    with pytest.raises(ValueError, match=f'nearest: .*\\(d_model={(1 << 17) * rule.head_dim}, n_layers=1\\)$'):
        shapes.solve_transformer(1e30, base, rule)


def test_the_search_reaches_exactly_max_layers_and_an_exact_hit_meets_tolerance_zero(base):
    rule = shapes.default_rule()
    rule.max_layers = 2
    assert shapes.solve_transformer(1e7, base, rule).n_layers == 2   # the aspect ratio wants more: the cap holds
    rule.tolerance = 0.0
    exact = shapes.count(shapes.shape_for(base, 2, 4 * rule.head_dim, rule), rule)
    assert shapes.count(shapes.solve_transformer(float(exact), base, rule), rule) == exact


@pytest.mark.parametrize('target, count, message', [
    (0.0, 'non_embedding', r'^target_params=0.0: must be a positive number$'),
    (1.0, 'non_embedding', r'^target_params=1: no transformer with head_dim=32 and at most 128 layers has '
                           r'non_embedding parameters within 5%; nearest: [0-9,]+ \(d_model=32, n_layers=1\), '
                           r'[0-9,]+ \(d_model=32, n_layers=2\), [0-9,]+ \(d_model=32, n_layers=3\)$'),
    (1e6, 'parameters', r"^shape.count='parameters': not one of \('non_embedding', 'total', 'with_head'\)$"),
])
def test_bad_targets_and_counts_are_named_in_full(base, target, count, message):
    rule = shapes.default_rule()
    rule.count = count
    with pytest.raises(ValueError, match=message):
        shapes.solve_transformer(target, base, rule)


def test_the_nearest_shapes_named_are_the_nearest_first(base):
    """When nothing is within tolerance, the message lists three shapes in order of their miss."""
    rule = shapes.default_rule()
    rule.update(max_layers=3, tolerance=0.0)
    with pytest.raises(ValueError) as refused:
        shapes.solve_transformer(1e5, base, rule)
    named = [int(n.replace(',', '')) for n in re.findall(r'([0-9,]+) \(d_model=', str(refused.value))]
    misses = [abs(n / 1e5 - 1) for n in named]
    assert len(named) == 3 and misses == sorted(misses)
