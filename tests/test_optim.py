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
