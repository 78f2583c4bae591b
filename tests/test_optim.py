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
                           weight_decay=0.0, grad_clip=0.0), 200, matrices=lambda n, ndim: ((0,), (1,)))
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
                              acc=np.full_like(p, 0.1), z=p.copy()) for k, p in params.items()}
        self.max_lr = self.weight_sum = 0.0  # schedule-free's, shared by every parameter

    def step(self, step, params, grads):
        h = HYPER
        rms = lambda x: np.sqrt(np.mean(x ** 2))
        grads = {k: (np.zeros_like(g) if self.frozen(k) else g) for k, g in grads.items()}
        norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
        grads = {k: g * min(1.0, h['grad_clip'] / norm) for k, g in grads.items()}
        out = {}
        if self.name == 'schedule_free_adamw':  # the average's weight: lr_max^2 over the sum so far
            self.max_lr = max(self.max_lr, reference_lr(step + 1))  # its step count starts at 1 (optax)
            self.weight_sum += self.max_lr ** 2
            average_weight = self.max_lr ** 2 / self.weight_sum if self.weight_sum > 0 else 0.0
        for k, p in params.items():
            if self.frozen(k):
                out[k] = p
                continue
            s, g, lr = self.state[k], grads[k], reference_lr(step) * self.scale(k)
            wd = 0.0 if self.independent or not decays(k) else h['weight_decay'] / self.scale(k)
            n = step + 1
            if self.name not in optim.DECOUPLED:
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
            elif self.name == 'lion':  # the sign of an interpolation; the momentum moves at b2
                direction = np.sign(h['b1'] * s['m'] + (1 - h['b1']) * g)
                s['m'] = h['b2'] * s['m'] + (1 - h['b2']) * g
                u = -lr * (direction + wd * p)
            elif self.name == 'adafactor':  # unfactored below 128: second moment at 1 - n^-0.8
                beta2 = 1 - n ** -0.8
                s['v'] = beta2 * s['v'] + (1 - beta2) * (g ** 2 + 1e-30)
                u = g / np.sqrt(s['v'])
                u = -lr * u / max(1.0, rms(u)) * max(rms(p), 1e-3)  # clipped at RMS 1, relative to the parameter
            elif self.name == 'muon' and k in MUON_MATRICES:
                beta = h['momentum']  # Nesterov momentum, both terms bias-corrected
                s['m'] = beta * s['m'] + (1 - beta) * g
                nesterov = beta * s['m'] / (1 - beta ** (n + 1)) + (1 - beta) * g / (1 - beta ** n)
                fan_in, fan_out = p.shape
                u = -lr * (newton_schulz(nesterov) * np.sqrt(max(1.0, fan_out / fan_in)) + wd * p)
            elif self.name == 'schedule_free_adamw':  # AdamW without momentum steps z; y between x and z
                s['v'] = h['b2'] * s['v'] + (1 - h['b2']) * g ** 2
                z_step = -lr * (g / (np.sqrt(s['v'] / (1 - h['b2'] ** n)) + h['eps']) + wd * p)
                x = (p - (1 - h['b1']) * s['z']) / h['b1']
                s['z'] = s['z'] + z_step
                x = (1 - average_weight) * x + average_weight * s['z']
                u = h['b1'] * x + (1 - h['b1']) * s['z'] - p
            else:  # adam, adamw; muon's AdamW side
                s['m'] = h['b1'] * s['m'] + (1 - h['b1']) * g
                s['v'] = h['b2'] * s['v'] + (1 - h['b2']) * g ** 2
                m_hat, v_hat = s['m'] / (1 - h['b1'] ** n), s['v'] / (1 - h['b2'] ** n)
                u = -lr * (m_hat / (np.sqrt(v_hat) + h['eps']) + (wd * p if self.name in optim.DECOUPLED else 0.0))
            if self.independent and decays(k):
                u = u - h['weight_decay'] * reference_lr(step) / PEAK * p
            out[k] = p + u
        return out


MUON_MATRICES = ('kernel',)  # the reference's hidden matrix; head.kernel goes to AdamW, as a real head does


def muon_matrices(name, ndim):
    return ((0,), (1,)) if name in MUON_MATRICES else None


def newton_schulz(x, coefficients=(3.4445, -4.775, 2.0315), steps=5):
    """Muon's quintic iteration towards the nearest semi-orthogonal matrix, on the wide side,
    after scaling to unit Frobenius norm (Jordan et al. 2024)."""
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + HYPER['eps'])
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def run_both(name, steps=4, groups=None, freeze='', with_states=False, **reference_kw):
    rng = np.random.default_rng(0)
    params64 = {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=4), 'norm.scale': 1 + rng.normal(size=4),
                'head.kernel': rng.normal(size=(4, 2))}
    tx, _ = optim.make(cfg(name=name, learning_rate=PEAK, warmup_steps=WARMUP, schedule='cosine',
                           min_lr_ratio=MIN_RATIO, independent_wd=reference_kw.get('independent', False), **HYPER),
                       TOTAL, groups=groups, freeze=freeze, matrices=muon_matrices)
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
    if with_states:
        return params, nested(params64), state, reference
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
    reader = {'name': 'momentum'} if key == 'momentum' else {}  # an optimizer that reads the key
    problems = optim.validate(cfg(**{key: bad}, **reader))
    assert len(problems) == 1 and problems[0].startswith(f'optim.{key}={bad!r}' if isinstance(bad, str)
                                                         else f'optim.{key}={bad}')
    assert optim.validate(cfg(**{key: edge_ok}, **reader)) == []


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
        "optim.name='lamb': not one of sgd, momentum, adagrad, rmsprop, adam, adamw, lion, adafactor, muon, "
        "schedule_free_adamw",
        "optim.schedule='linear': not one of constant, cosine, wsd"]


@pytest.mark.parametrize('name, key, value', [('lion', 'momentum', 0.8), ('lion', 'eps', 1e-6),
                                             ('sgd', 'b1', 0.5), ('adafactor', 'b2', 0.99)])
def test_a_key_the_optimizer_does_not_read_is_refused_by_name(name, key, value):
    default = optim.default_config()[key]
    reads = ', '.join(optim.READS[name]) or 'none of b1, b2, eps, momentum'
    assert optim.validate(cfg(name=name, **{key: value})) == [
        f'optim.{key}={value}: {name} does not use it (it reads {reads}); leave it at its default, {default}']
    assert optim.validate(cfg(name=name)) == []  # the defaults pass whatever the optimizer


def test_adafactor_factors_the_second_moment_of_large_matrices():
    """Both dims >= 128: v is kept as a row and a column mean; the update is g / sqrt(v_row v_col
    / mean(v_row)) (Shazeer & Stern 2018), clipped at RMS 1 and scaled by the parameter's RMS."""
    rng = np.random.default_rng(1)
    p64, g64 = rng.normal(size=(128, 130)), rng.normal(size=(128, 130))
    tx, _ = optim.make(cfg(name='adafactor', learning_rate=0.01, warmup_steps=0, schedule='constant',
                           weight_decay=0.0, grad_clip=0.0), 10)
    params = {'w': jnp.asarray(p64, jnp.float32)}
    state = tx.init(params)
    assert state[0][0].v_row['w'].shape == (128,) and state[0][0].v_col['w'].shape == (130,)
    v_row, v_col = np.zeros(128), np.zeros(130)
    for n in (1, 2, 3):
        updates, state = tx.update({'w': jnp.asarray(g64, jnp.float32)}, state, params)
        beta2 = 1 - n ** -0.8
        v_row = beta2 * v_row + (1 - beta2) * np.mean(g64 ** 2 + 1e-30, axis=1)
        v_col = beta2 * v_col + (1 - beta2) * np.mean(g64 ** 2 + 1e-30, axis=0)
        u = g64 / np.sqrt(np.outer(v_row / v_row.mean(), v_col))
        u = -0.01 * u / max(1.0, np.sqrt(np.mean(u ** 2))) * max(np.sqrt(np.mean(p64 ** 2)), 1e-3)
        np.testing.assert_allclose(np.asarray(updates['w'], np.float64), u, rtol=1e-4, atol=1e-8)
        params = optax.apply_updates(params, updates)
        p64 = p64 + u


def test_muon_orthogonalises_each_layer_of_a_stacked_weight_with_its_axes():
    """A stacked (layers, d_model, heads, head_dim) q kernel: each layer's (d_model, heads x head_dim)
    matrix is orthogonalised on its own (singular values near 1, the NS fixed point's band)."""
    rng = np.random.default_rng(2)
    g = rng.normal(size=(2, 16, 4, 8))
    matrices = lambda name, ndim: ((ndim - 3,), (ndim - 2, ndim - 1))
    tx, _ = optim.make(cfg(name='muon', learning_rate=1.0, warmup_steps=0, schedule='constant', weight_decay=0.0,
                           grad_clip=0.0, momentum=0.0), 10, matrices=matrices)
    params = {'q': {'kernel': jnp.zeros((2, 16, 4, 8))}}
    updates, _ = tx.update({'q': {'kernel': jnp.asarray(g, jnp.float32)}}, tx.init(params), params)
    for layer in range(2):
        matrix = -np.asarray(updates['q']['kernel'][layer], np.float64).reshape(16, 32)  # lr 1, scale sqrt(32/16)
        expected = newton_schulz(g[layer].reshape(16, 32)) * np.sqrt(2.0)
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=3e-4)  # float32's 5 quintic steps: 5e-5
        singular = np.linalg.svd(matrix / np.sqrt(2.0), compute_uv=False)
        assert 0.6 < singular.min() and singular.max() < 1.3


def test_muon_keeps_one_rate_under_mup_groups():
    """Muon's spectral scaling replaces muP's 1 / width multiplier: groups change nothing."""
    groups = ({'hidden': 0.25, 'other': 1.0}, lambda n: 'hidden' if n == 'kernel' else 'other')
    grouped, _ = run_both('muon', groups=groups)
    plain, _ = run_both('muon')
    jax.tree.map(np.testing.assert_array_equal, grouped, plain)


def test_schedule_free_evaluates_the_average_of_its_iterates():
    """x = (y - (1 - b1) z) / b1: the point schedule-free AdamW evaluates, by hand, after warmup
    and a cosine (the reference follows the schedule it is given)."""
    ours, reference_y, state, reference = run_both('schedule_free_adamw', with_states=True)
    evaluated = optim.eval_params(state, ours)
    b1 = HYPER['b1']
    for key, y in (('kernel', reference_y['kernel']), ('bias', reference_y['bias'])):
        x = (y - (1 - b1) * reference.state[key]['z']) / b1
        np.testing.assert_allclose(np.asarray(evaluated[key], np.float64), x, rtol=2e-5, atol=1e-6)
    assert not np.allclose(np.asarray(evaluated['kernel']), np.asarray(ours['kernel']))  # x is not y
    plain, _, adamw_state, _ = run_both('adamw', with_states=True)
    assert optim.eval_params(adamw_state, plain) is plain  # other optimizers evaluate what they train
