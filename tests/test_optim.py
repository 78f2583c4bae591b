"""Schedules, weight-decay masking and every optimizer, against hand computation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalelab.training import optim


def cfg(**kw):
    c = optim.default_config()
    c.update(**kw)
    return c


def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_warmup_then_cosine_to_min_ratio():
    lr = optim.schedule(cfg(learning_rate=1.0, warmup_steps=10, schedule='cosine', min_lr_ratio=0.1), 110)
    np.testing.assert_allclose(values(lr, [0, 5, 10]), [0.0, 0.5, 1.0], atol=1e-6)
    # halfway through the decay: 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
    np.testing.assert_allclose(values(lr, [60, 110]), [0.55, 0.1], atol=1e-6)


def test_warmup_stable_decay():
    lr = optim.schedule(cfg(learning_rate=2.0, warmup_steps=10, schedule='wsd', decay_fraction=0.2,
                            min_lr_ratio=0.0), 100)
    np.testing.assert_allclose(values(lr, [10, 50, 80]), [2.0, 2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(values(lr, [90, 100]), [1.0, 0.0], atol=1e-6)


def test_constant_after_warmup():
    lr = optim.schedule(cfg(learning_rate=0.3, warmup_steps=0, schedule='constant'), 50)
    np.testing.assert_allclose(values(lr, [0, 25, 50]), [0.3] * 3, atol=1e-7)


def test_weight_decay_skips_norms_and_biases():
    """With zero gradients, AdamW changes only matrices, by lr * wd * p."""
    params = {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones(4), 'scale': jnp.ones(4),
              'blocks': {'norm': {'scale': jnp.ones((2, 4))}}}  # a stacked (scanned) norm is 2-D
    tx, _ = optim.make(cfg(name='adamw', learning_rate=0.1, warmup_steps=0, schedule='constant',
                           weight_decay=0.5, grad_clip=0.0), 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new['kernel'], 1 - 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(new['bias'], 1.0)
    np.testing.assert_array_equal(new['scale'], 1.0)
    np.testing.assert_array_equal(new['blocks']['norm']['scale'], 1.0)


def test_global_norm_clipping():
    params = {'w': jnp.zeros((2, 2))}
    tx, _ = optim.make(cfg(name='sgd', learning_rate=1.0, warmup_steps=0, schedule='constant',
                           weight_decay=0.0, grad_clip=1.0), 10)
    grads = {'w': jnp.full((2, 2), 10.0)}  # norm 20 -> clipped to 1
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_every_optimizer_minimizes_a_quadratic(name):
    target = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    params = {'w': jnp.zeros((2, 2))}
    learning_rate = 1.0 if name == 'adagrad' else 0.1  # adagrad's denominator only grows
    tx, _ = optim.make(cfg(name=name, learning_rate=learning_rate, warmup_steps=0, schedule='constant',
                           weight_decay=0.0, grad_clip=0.0), 200)
    state = tx.init(params)
    loss = lambda p: jnp.sum((p['w'] - target) ** 2)
    for _ in range(200):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < 0.05 * float(loss({'w': jnp.zeros((2, 2))}))


# --- every optimizer's step against a float64 NumPy reference -------------------------

PEAK, WARMUP, TOTAL, MIN_RATIO = 0.05, 2, 10, 0.2
HYPER = dict(b1=0.8, b2=0.85, eps=1e-3, momentum=0.7, weight_decay=0.05, grad_clip=0.5)  # none a default


def reference_lr(step):
    """Linear warmup from 0, then cosine to MIN_RATIO of the peak, by hand."""
    if step < WARMUP:
        return PEAK * step / WARMUP
    t = (step - WARMUP) / (TOTAL - WARMUP)
    return PEAK * ((1 - MIN_RATIO) * 0.5 * (1 + np.cos(np.pi * t)) + MIN_RATIO)


def decays(name):
    return not (name.endswith('bias') or name.endswith('scale'))


class Reference:
    """One optimizer, float64, parameter by parameter; `scale` and `frozen` by name."""

    def __init__(self, name, params, *, scale=lambda n: 1.0, frozen=lambda n: False, independent=False):
        self.name, self.scale, self.frozen, self.independent = name, scale, frozen, independent
        self.state = {k: dict(m=np.zeros_like(p), v=np.zeros_like(p), t=np.zeros_like(p),
                              acc=np.full_like(p, 0.1)) for k, p in params.items()}

    def step(self, step, params, grads):
        h = HYPER
        grads = {k: (np.zeros_like(g) if self.frozen(k) else g) for k, g in grads.items()}
        norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
        grads = {k: g * min(1.0, h['grad_clip'] / norm) for k, g in grads.items()}
        out = {}
        for k, p in params.items():
            if self.frozen(k):
                out[k] = p
                continue
            s, g, lr = self.state[k], grads[k], reference_lr(step) * self.scale(k)
            wd = 0.0 if self.independent or not decays(k) else h['weight_decay'] / self.scale(k)
            n = step + 1
            if self.name != 'adamw':
                g = g + wd * p  # L2, added to the gradient
            if self.name == 'sgd':
                u = -lr * g
            elif self.name == 'momentum':
                s['t'] = g + h['momentum'] * s['t']
                u = -lr * s['t']
            elif self.name == 'adagrad':
                s['acc'] = s['acc'] + g ** 2
                u = -lr * g / np.sqrt(s['acc'] + h['eps'])
            elif self.name == 'rmsprop':
                s['v'] = h['b2'] * s['v'] + (1 - h['b2']) * g ** 2
                u = -lr * g / np.sqrt(s['v'] + h['eps'])
            else:  # adam, adamw
                s['m'] = h['b1'] * s['m'] + (1 - h['b1']) * g
                s['v'] = h['b2'] * s['v'] + (1 - h['b2']) * g ** 2
                m_hat, v_hat = s['m'] / (1 - h['b1'] ** n), s['v'] / (1 - h['b2'] ** n)
                u = -lr * (m_hat / (np.sqrt(v_hat) + h['eps']) + (wd * p if self.name == 'adamw' else 0.0))
            if self.independent and decays(k):
                u = u - h['weight_decay'] * reference_lr(step) / PEAK * p
            out[k] = p + u
        return out


def run_both(name, steps=4, groups=None, freeze='', **reference_kw):
    rng = np.random.default_rng(0)
    params64 = {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=4), 'norm.scale': 1 + rng.normal(size=4),
                'head.kernel': rng.normal(size=(4, 2))}
    tx, _ = optim.make(cfg(name=name, learning_rate=PEAK, warmup_steps=WARMUP, schedule='cosine',
                           min_lr_ratio=MIN_RATIO, independent_wd=reference_kw.get('independent', False), **HYPER),
                       TOTAL, groups=groups, freeze=freeze)
    nested = lambda flat: {'kernel': flat['kernel'], 'bias': flat['bias'], 'norm': {'scale': flat['norm.scale']},
                           'head': {'kernel': flat['head.kernel']}}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), nested(params64))
    state = tx.init(params)
    reference = Reference(name, params64, **reference_kw)
    for step in range(steps):
        grads64 = {k: rng.normal(size=p.shape) for k, p in params64.items()}
        updates, state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), nested(grads64)), state, params)
        params = optax.apply_updates(params, updates)
        params64 = reference.step(step, params64, grads64)
    return params, nested(params64)


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_every_optimizer_steps_as_its_update_rule_says(name):
    """Non-default b1, b2, eps, momentum, decay and clipping, through warmup into the cosine:
    every parameter after 4 steps as a float64 reference of the rule computes it."""
    ours, reference = run_both(name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=2e-5, atol=1e-7),
                 ours, reference)


@pytest.mark.parametrize('name, with_groups, with_freeze, independent', [
    ('adamw', True, True, False), ('momentum', True, True, False), ('adamw', True, False, False),
    ('sgd', False, True, False), ('adamw', True, False, True)])
def test_groups_scale_the_rate_not_the_decay_and_frozen_parameters_stay(name, with_groups, with_freeze, independent):
    """muP groups: the head's rate x0.25 while its coupled decay per step stays lr * wd (and
    independent decay follows the schedule alone); frozen norms keep their values and take no
    share of the clipping norm. Groups, freezing, or both."""
    groups = ({'hidden': 1.0, 'head': 0.25}, lambda n: 'head' if n.startswith('head') else 'hidden')
    ours, reference = run_both(name, groups=groups if with_groups else None,
                               freeze=r'^norm\.' if with_freeze else '', independent=independent,
                               scale=lambda k: 0.25 if with_groups and k.startswith('head') else 1.0,
                               frozen=lambda k: with_freeze and k.startswith('norm'))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=2e-5, atol=1e-7),
                 ours, reference)


@pytest.mark.parametrize('name', ['adamw', 'sgd'])
def test_independent_decay_follows_the_schedule_not_the_rate(name):
    ours, reference = run_both(name, independent=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=2e-5, atol=1e-7),
                 ours, reference)


@pytest.mark.parametrize('key, bad, edge_ok', [
    ('learning_rate', 0.0, 1e-12), ('warmup_steps', -1, 0), ('weight_decay', -0.1, 0.0), ('grad_clip', -1.0, 0.0),
    ('warmup_fraction', 1.0, 0.0), ('warmup_fraction', -0.1, 0.999), ('decay_fraction', 1.01, 1.0),
    ('decay_fraction', -0.01, 0.0), ('min_lr_ratio', 1.5, 1.0), ('min_lr_ratio', -0.5, 0.0),
    ('b1', 1.0, 0.0), ('b2', -0.1, 0.999), ('momentum', 1.0, 0.0), ('eps', 0.0, 1e-30),
    ('name', 'lamb', 'adagrad'), ('schedule', 'linear', 'wsd'),
])
def test_each_bad_value_is_named_and_each_edge_of_the_valid_range_passes(key, bad, edge_ok):
    problems = optim.validate(cfg(**{key: bad}))
    assert len(problems) == 1 and problems[0].startswith(f'optim.{key}={bad!r}' if isinstance(bad, str)
                                                         else f'optim.{key}={bad}')
    assert optim.validate(cfg(**{key: edge_ok})) == []


def test_schedule_edges_by_hand():
    """One cosine step after warmup lands on the floor; a one-step warmup starts at 0; WSD with
    no decay stays at the peak; WSD whose warmup and decay fill the run has no stable phase."""
    lr = optim.schedule(cfg(learning_rate=1.0, warmup_steps=10, schedule='cosine', min_lr_ratio=0.25), 11)
    assert values(lr, [0, 5, 10, 11]) == pytest.approx([0.0, 0.5, 1.0, 0.25])
    lr = optim.schedule(cfg(learning_rate=2.0, warmup_steps=1, schedule='constant'), 10)
    assert values(lr, [0, 1, 5]) == pytest.approx([0.0, 2.0, 2.0])
    lr = optim.schedule(cfg(learning_rate=1.0, warmup_steps=0, schedule='wsd', decay_fraction=0.0), 10)
    assert values(lr, [0, 9, 10]) == pytest.approx([1.0, 1.0, 1.0])
    lr = optim.schedule(cfg(learning_rate=1.0, warmup_steps=2, schedule='wsd', decay_fraction=0.8,
                            min_lr_ratio=0.0), 10)
    assert values(lr, [2, 3, 6, 10]) == pytest.approx([1.0, 1 - 1 / 8, 0.5, 0.0])  # decay from step 2
    lr = optim.schedule(cfg(learning_rate=1.0, warmup_steps=0, schedule='wsd', decay_fraction=0.1,
                            min_lr_ratio=0.0), 10)
    assert values(lr, [8, 9, 10]) == pytest.approx([1.0, 1.0, 0.0])  # one decay step
    with pytest.raises(ValueError, match=r"optim.schedule='linear': not one of constant, cosine, wsd"):
        optim.schedule(cfg(schedule='linear'), 10)
    assert optim.validate(cfg(name='lamb', schedule='linear')) == [
        "optim.name='lamb': not one of sgd, momentum, adagrad, rmsprop, adam, adamw",
        "optim.schedule='linear': not one of constant, cosine, wsd"]
