"""The gradient noise scale: the estimator against the closed form of a linear regression
with Gaussian noise, the step's two squared norms against per-microbatch gradients computed
apart, a run that logs it, and the config it refuses."""
import json

import jax
import numpy as np
import pytest

from scalelab.core import parallel
from scalelab.core.errors import ConfigError
from scalelab.training import config, loop, noise_scale, plan, train
from scalelab import data as data_lib
from tests.helpers import tiny_lm


def test_the_estimator_recovers_a_linear_regressions_closed_form():
    """y = x.w* + e, x ~ N(0, I_d), e ~ N(0, s^2), loss (x.w - y)^2 / 2 at w = w* + d: the
    per-example gradient x (x.d - e) has mean G = d and covariance (|d|^2 + s^2) I + d d^T
    (Gaussian fourth moments), so tr(S) = dim (|d|^2 + s^2) + |d|^2 and B_simple = tr(S) / |d|^2."""
    rng = np.random.default_rng(0)
    dim, sigma, batch, micro, steps = 8, 1.0, 64, 4, 4000
    delta = rng.normal(size=dim)
    delta *= 0.5 / np.linalg.norm(delta)
    records = []
    for _ in range(steps):
        x = rng.normal(size=(batch, dim))
        per_example = x * (x @ delta - sigma * rng.normal(size=batch))[:, None]
        small = per_example.reshape(micro, batch // micro, dim).mean(axis=1)
        records.append({'gns_small_sq': np.mean(np.sum(small ** 2, axis=1)),
                        'gns_big_sq': np.sum(per_example.mean(axis=0) ** 2)})
    measured = noise_scale.interval(records, batch, micro)
    trace = dim * (0.25 + sigma ** 2) + 0.25
    assert measured['noise_grad_sq'] == pytest.approx(0.25, rel=0.05)
    assert measured['noise_trace'] == pytest.approx(trace, rel=0.02)
    assert measured['noise_scale'] == pytest.approx(trace / 0.25, rel=0.06)
    assert noise_scale.interval([{'loss': 1.0}], batch, micro) == {}  # steps that did not measure it


def test_the_steps_squared_norms_are_the_microbatches_and_their_means():
    """Microbatch i is rows i, i + n, i + 2n, ... of the batch (each device keeps its rows)."""
    cfg = tiny_lm(**{'train.microbatches': 4, 'log.noise_scale': True, 'optim.warmup_steps': 0})
    the_plan = plan.make(cfg, 1)
    cfg = the_plan.cfg
    mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:1])
    prepared = train.setup(the_plan, mesh)
    state = jax.jit(prepared.init)()
    batch = data_lib.load(cfg.data, cfg.train.global_batch, cfg.seed).train_batch(0, slice(0, cfg.train.global_batch))
    with jax.set_mesh(mesh):
        _, step_metrics = jax.jit(train.train_step, static_argnums=0)(prepared.spec, state, batch)
        key = jax.random.key(0)  # the tiny LM has no dropout: the key changes nothing
        grad = jax.jit(jax.grad(lambda p, b: train._loss_fn(prepared.spec, p, state['model_state'], b, key)[0]))
        grads = [jax.device_get(grad(state['params'], {k: v[i::4] for k, v in batch.items()})) for i in range(4)]
    squared = lambda tree: sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(tree))
    assert float(step_metrics['gns_small_sq']) == pytest.approx(np.mean([squared(g) for g in grads]), rel=1e-4)
    mean = jax.tree.map(lambda *g: np.mean(np.stack(g), axis=0), *grads)
    assert float(step_metrics['gns_big_sq']) == pytest.approx(squared(mean), rel=1e-4)
    assert float(step_metrics['gns_big_sq']) < float(step_metrics['gns_small_sq'])


def test_a_run_logs_its_noise_scale_and_one_without_microbatches_is_refused(tmp_path):
    loop.run(tiny_lm(**{'train.microbatches': 4, 'log.noise_scale': True, 'train.steps': 6, 'train.log_every': 3}),
             tmp_path / 'run', devices=jax.devices()[:1])
    logged = [json.loads(line) for line in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    trained = [r for r in logged if 'loss' in r]
    assert len(trained) == 2 and all(r['noise_scale'] > 0 and r['noise_trace'] > 0 for r in trained)
    with pytest.raises(ConfigError, match=r'log.noise_scale=True: needs train.microbatches >= 2 \(got 1\)'):
        config.resolve(tiny_lm(**{'log.noise_scale': True}), 1)
