"""ResNet of basic blocks (He et al. 2016) for small images.

A stem conv, then `stages` stages of `blocks_per_stage` basic blocks (two 3x3
convs with a residual); each later stage halves the resolution (stride 2,
1x1 projection shortcut) and doubles the channels. Normalization: none,
layer norm, group norm, or batch norm, whose running statistics live in the
train state beside the parameters.
"""
from __future__ import annotations

import math

import jax
import ml_collections
from flax import nnx

from scalelab.core.parallel import constrain
from scalelab.models import base, layers
from scalelab.models.cnn import conv

TASKS = ('classification',)
DEFAULT_DATA = 'images'
CHOICES = {'norm': ('none', 'layernorm', 'groupnorm', 'batchnorm'), 'activation': tuple(layers.ACTIVATIONS)}
POSITIVE = ('width', 'stages', 'blocks_per_stage', 'groups')
EMBEDDING_PARAMS = ()


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='resnet',
        width=16,              # channels of the first stage; each later stage doubles them
        stages=3,
        blocks_per_stage=2,
        norm='batchnorm',
        groups=8,              # groupnorm: groups per layer (at most the channels)
        batchnorm_momentum=0.9,
        activation='relu',
    ))


def resolve(cfg) -> None:
    pass


def validate(cfg, spec) -> list[str]:
    problems = []
    if not 0.0 <= cfg.batchnorm_momentum < 1.0:
        problems.append(f'model.batchnorm_momentum={cfg.batchnorm_momentum}: must be in [0, 1)')
    if cfg.norm == 'groupnorm' and cfg.width % min(cfg.groups, cfg.width):
        problems.append(f'model.groups={cfg.groups}: must divide model.width={cfg.width}')
    return problems


def stage_channels(cfg) -> list[int]:
    return [cfg.width * 2 ** s for s in range(cfg.stages)]


class Norm(nnx.Module):
    def __init__(self, kind: str, channels: int, cfg, rngs):
        self.kind = kind
        scale = dict(scale_init=layers.ones(('norm',)), bias_init=layers.zeros(('norm',)))
        if kind == 'batchnorm':
            self.norm = nnx.BatchNorm(channels, momentum=cfg.batchnorm_momentum, rngs=rngs, **scale)
        elif kind == 'layernorm':
            self.norm = nnx.LayerNorm(channels, rngs=rngs, **scale)
        elif kind == 'groupnorm':
            self.norm = nnx.GroupNorm(channels, num_groups=min(cfg.groups, channels), rngs=rngs, **scale)
        else:
            self.norm = None

    def __call__(self, x, train: bool):
        if self.kind == 'batchnorm':
            return self.norm(x, use_running_average=not train)
        return x if self.norm is None else self.norm(x)


class BasicBlock(nnx.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, cfg, rngs):
        bias = cfg.norm == 'none'
        self.activation = cfg.activation
        self.conv1 = conv(c_in, c_out, 3, rngs, stride=stride, use_bias=bias)
        self.norm1 = Norm(cfg.norm, c_out, cfg, rngs)
        self.conv2 = conv(c_out, c_out, 3, rngs, use_bias=bias)
        self.norm2 = Norm(cfg.norm, c_out, cfg, rngs)
        self.project = conv(c_in, c_out, 1, rngs, stride=stride, use_bias=bias) if stride != 1 or c_in != c_out else None
        self.project_norm = Norm(cfg.norm, c_out, cfg, rngs) if self.project is not None else None

    def __call__(self, x, train: bool):
        act = layers.ACTIVATIONS[self.activation]
        h = act(self.norm1(self.conv1(x), train))
        h = self.norm2(self.conv2(h), train)
        shortcut = x if self.project is None else self.project_norm(self.project(x), train)
        return constrain(act(h + shortcut), 'act_batch', None, None, 'act_conv')


class Model(nnx.Module):
    def __init__(self, cfg, spec, *, rngs: nnx.Rngs):
        self.activation = cfg.activation
        channels = stage_channels(cfg)
        self.stem = conv(spec.input_shape[-1], channels[0], 3, rngs, use_bias=cfg.norm == 'none')
        self.stem_norm = Norm(cfg.norm, channels[0], cfg, rngs)
        self.blocks = nnx.List()
        c_in = channels[0]
        for s, c_out in enumerate(channels):
            for b in range(cfg.blocks_per_stage):
                self.blocks.append(BasicBlock(c_in, c_out, 2 if s > 0 and b == 0 else 1, cfg, rngs))
                c_in = c_out
        self.head = layers.Dense((c_in,), (spec.num_outputs,), ('embed', None), std=1 / math.sqrt(c_in),
                                 use_bias=True, rngs=rngs)

    def __call__(self, images, *, train: bool = False, rngs=None):
        h = layers.ACTIVATIONS[self.activation](self.stem_norm(self.stem(images), train))
        for block in self.blocks:
            h = block(h, train)
        return self.head(jax.numpy.mean(h, axis=(1, 2)))  # global average pool


def _convs(cfg, spec):
    """(kernel, stride, c_in, c_out, input height, input width) of every convolution, and the last width."""
    height, width, c_in = spec.input_shape
    channels = stage_channels(cfg)
    convs = [(3, 1, c_in, channels[0], height, width)]
    c_in = channels[0]
    for s, c_out in enumerate(channels):
        for b in range(cfg.blocks_per_stage):
            stride = 2 if s > 0 and b == 0 else 1
            convs.append((3, stride, c_in, c_out, height, width))
            if stride != 1 or c_in != c_out:
                convs.append((1, stride, c_in, c_out, height, width))
            height, width = -(-height // stride), -(-width // stride)  # SAME padding
            convs.append((3, 1, c_out, c_out, height, width))
            c_in = c_out
    return convs, c_in


def param_counts(cfg, spec) -> dict[str, int]:
    convs, c_last = _convs(cfg, spec)
    per_norm = 0 if cfg.norm == 'none' else 2  # scale and bias per channel (batch statistics are state)
    bias = 1 if cfg.norm == 'none' else 0
    return layers.no_embedding(sum(k * k * a * b + b * (bias + per_norm) for k, _, a, b, _, _ in convs)
                               + layers.dense_params([c_last, spec.num_outputs], True))


def forward_flops(cfg, spec, causal: bool = True) -> float:
    convs, c_last = _convs(cfg, spec)
    return (2.0 * sum(a * b * layers.conv_taps(h, k, s) * layers.conv_taps(w, k, s) for k, s, a, b, h, w in convs)
            + layers.dense_flops([c_last, spec.num_outputs]))


class ResNet(base.Family):
    name = 'resnet'
