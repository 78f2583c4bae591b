"""Building blocks whose parameters carry logical axis names."""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


ACTIVATIONS = {
    'linear': lambda x: x,
    'sigmoid': jax.nn.sigmoid,
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
    'leaky_relu': jax.nn.leaky_relu,
    'gelu': jax.nn.gelu,
    'silu': jax.nn.silu,
}


def normal(std: float, names: Sequence[str | None]):
    return nnx.with_partitioning(nnx.initializers.normal(std), tuple(names))


def zeros(names: Sequence[str | None]):
    return nnx.with_partitioning(nnx.initializers.zeros_init(), tuple(names))


def ones(names: Sequence[str | None]):
    return nnx.with_partitioning(nnx.initializers.ones_init(), tuple(names))


class Dense(nnx.Module):
    """y = x · W (+ b), contracting the last len(in_shape) axes of x.

    A general shape lets attention keep heads as their own axis
    (d_model -> heads x head_dim), so tensor parallelism can split them.
    The product itself is one 2-D matmul: with the batch axes (B, L) left
    separate, XLA:CPU transposes the output gradient for the weight gradient,
    which cost 13% of a d_model-512 step (1.5 s of 11 s in a profile).
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int],
                 names: Sequence[str | None], *, std: float, use_bias: bool, rngs: nnx.Rngs):
        self.n_in = len(in_shape)
        out_names = tuple(names[self.n_in:])
        self.kernel = nnx.Param(normal(std, names)(rngs.params(), (*in_shape, *out_shape)))
        self.bias = nnx.Param(zeros(out_names)(rngs.params(), tuple(out_shape))) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        batch_shape, out_shape = x.shape[:x.ndim - self.n_in], kernel.shape[self.n_in:]
        x_2d = x.reshape(math.prod(batch_shape), -1)
        y = (x_2d @ kernel.reshape(x_2d.shape[1], -1)).reshape(*batch_shape, *out_shape)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def lecun_normal(names: Sequence[str | None]):
    """Variance 1/fan_in, for convolution kernels (fan_in = k_h * k_w * C_in)."""
    return nnx.with_partitioning(nnx.initializers.lecun_normal(), tuple(names))


def norm(kind: str, dim: int, *, eps: float, use_bias: bool, rngs: nnx.Rngs) -> nnx.Module:
    """RMSNorm or LayerNorm over the last axis; statistics are computed in float32 by flax."""
    if kind == 'rmsnorm':
        return nnx.RMSNorm(dim, epsilon=eps, scale_init=ones(('norm',)), rngs=rngs)
    if kind == 'layernorm':
        return nnx.LayerNorm(dim, epsilon=eps, use_bias=use_bias, scale_init=ones(('norm',)),
                             bias_init=zeros(('norm',)), rngs=rngs)
    raise ValueError(f'unknown norm {kind!r}')


def embedding(vocab_size: int, dim: int, std: float, rngs: nnx.Rngs) -> nnx.Embed:
    """A (vocab, dim) table that looks up and attends in its own dtype: nnx.Embed fixes its
    dtype to the parameter dtype at construction (float32), so a table cast to the compute
    dtype (train.compute_dtype) would be promoted back to float32, and every matmul after it
    with it."""
    return nnx.Embed(vocab_size, dim, embedding_init=normal(std, ('vocab', 'embed')), promote_dtype=_own_dtype,
                     rngs=rngs)


def _own_dtype(args, dtype=None, inexact=True):
    """nnx.Embed's promote_dtype hook, left as the arrays are."""
    return args


def dropout(x: jax.Array, rate: float, rngs: nnx.Rngs | None) -> jax.Array:
    """Inverted dropout; identity when rate is 0 or no rngs are given (evaluation)."""
    if rate == 0.0 or rngs is None:
        return x
    return nnx.Dropout(rate)(x, deterministic=False, rngs=rngs)


def vocab_problems(vocab_size: int, spec) -> list[str]:
    """model.vocab_size must hold every id the data's tokenizer produces (0 takes its size)."""
    if vocab_size < 0:
        return [f'model.vocab_size={vocab_size}: must be positive, or 0 for the data\'s vocabulary']
    if 0 < vocab_size < spec.num_outputs:
        where = spec.vocab_source or 'the data'
        return [f'model.vocab_size={vocab_size} (the model) is smaller than the {spec.num_outputs} ids of '
                f'{where}; set model.vocab_size=0 to take the tokenizer\'s, or a larger value']
    return []


# --- counting: the arithmetic of the layers above, shared by the families' hand counts ---


def dense_params(dims, bias: bool) -> int:
    """Parameters of Dense layers dims[0] -> dims[1] -> ... (weights, and biases if any)."""
    return sum(a * b + (b if bias else 0) for a, b in zip(dims[:-1], dims[1:]))


def dense_flops(dims) -> float:
    """Forward FLOPs of the same layers: 2 fan_in fan_out each."""
    return 2.0 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def conv_taps(n: int, k: int, stride: int = 1) -> int:
    """Kernel taps that land inside a length-n input, summed over the outputs of a
    SAME-padded convolution: the padding's zeros are no arithmetic. Without
    padding this is k * n_out; 2-D convolutions multiply the two axes' counts."""
    out = -(-n // stride)
    pad_lo = max((out - 1) * stride + k - n, 0) // 2
    return sum(min(i * stride - pad_lo + k, n) - max(i * stride - pad_lo, 0) for i in range(out))


def no_embedding(total: int) -> dict[str, int]:
    """Counts of a family with no embedding parameters."""
    return {'total': total, 'embedding': 0, 'non_embedding': total}
