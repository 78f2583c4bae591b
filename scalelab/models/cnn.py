"""Convolutional classifier: conv blocks (3x3 conv, activation, 2x2 max-pool), then a dense head."""
from __future__ import annotations

import math

import ml_collections
from flax import nnx

from scalelab.core.parallel import constrain
from scalelab.models import base, layers

TASKS = ('classification',)
DEFAULT_DATA = 'images'
CHOICES = {'activation': tuple(layers.ACTIVATIONS)}
POSITIVE = ('channels', 'depth', 'kernel_size', 'head_width')
EMBEDDING_PARAMS = ()
CONV_NAMES = (None, None, 'conv_in', 'conv_out')


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='cnn',
        channels=32,      # channels of the first block; each later block doubles them
        depth=2,          # conv blocks, each halving height and width
        kernel_size=3,
        head_width=128,
        activation='relu',
    ))


def resolve(cfg) -> None:
    pass


def block_channels(cfg) -> list[int]:
    return [cfg.channels * 2 ** i for i in range(cfg.depth)]


def validate(cfg, spec) -> list[str]:
    height, width = spec.input_shape[:2]
    if min(height, width) >> cfg.depth == 0:
        return [f'model.depth={cfg.depth}: {cfg.depth} 2x2 poolings shrink a {height}x{width} image to nothing; '
                f'at most {int(math.log2(min(height, width)))}']
    return []


def conv(c_in: int, c_out: int, kernel: int, rngs, *, stride: int = 1, use_bias: bool = True) -> nnx.Conv:
    return nnx.Conv(c_in, c_out, (kernel, kernel), strides=stride, padding='SAME', use_bias=use_bias,
                    kernel_init=layers.lecun_normal(CONV_NAMES),
                    bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ('conv_out',)), rngs=rngs)


class Model(nnx.Module):
    def __init__(self, cfg, spec, *, rngs: nnx.Rngs):
        self.activation = cfg.activation
        height, width, c_in = spec.input_shape
        self.convs = nnx.List()
        for c_out in block_channels(cfg):
            self.convs.append(conv(c_in, c_out, cfg.kernel_size, rngs))
            c_in, height, width = c_out, height // 2, width // 2
        flat = height * width * c_in
        self.hidden = layers.Dense((flat,), (cfg.head_width,), ('embed', 'mlp'), std=1 / math.sqrt(flat),
                                   use_bias=True, rngs=rngs)
        self.out = layers.Dense((cfg.head_width,), (spec.num_outputs,), ('mlp', None),
                                std=1 / math.sqrt(cfg.head_width), use_bias=True, rngs=rngs)

    def __call__(self, images, *, train: bool = False, rngs=None):
        act = layers.ACTIVATIONS[self.activation]
        h = images
        for c in self.convs:
            h = constrain(act(c(h)), 'act_batch', None, None, 'act_conv')
            h = nnx.max_pool(h, (2, 2), strides=(2, 2), padding='VALID')
        h = constrain(act(self.hidden(h.reshape(h.shape[0], -1))), 'act_batch', 'act_mlp')
        return self.out(h)


def _conv_layers(cfg, spec):
    """(c_in, c_out, height, width) of each conv at the resolution it computes, and the flat size after them."""
    height, width, c_in = spec.input_shape
    out = []
    for i in range(cfg.depth):
        c_out = cfg.channels * 2 ** i
        out.append((c_in, c_out, height, width))
        c_in, height, width = c_out, height // 2, width // 2
    return out, height * width * c_in


def param_counts(cfg, spec) -> dict[str, int]:
    convs, flat = _conv_layers(cfg, spec)
    k2 = cfg.kernel_size ** 2
    return layers.no_embedding(sum(k2 * a * b + b for a, b, _, _ in convs)
                               + layers.dense_params([flat, cfg.head_width, spec.num_outputs], True))


def forward_flops(cfg, spec, causal: bool = True) -> float:
    """Convolutions: 2 C_in C_out x (taps inside the image), i.e. 2 k_h k_w C_in C_out
    H_out W_out less the padding; then the dense head."""
    convs, flat = _conv_layers(cfg, spec)
    k = cfg.kernel_size
    return (2.0 * sum(a * b * layers.conv_taps(h, k) * layers.conv_taps(w, k) for a, b, h, w in convs)
            + layers.dense_flops([flat, cfg.head_width, spec.num_outputs]))


class CNN(base.Family):
    name = 'cnn'
