"""What a model family provides: one subclass of Family per models/<family>.py, registered
by name in models.FAMILIES. Adding a family touches its own file and the registry.

Class attributes:
    name              the config's model.name
    TASKS             what it can learn (tasks.TASKS)
    DEFAULT_DATA      the data source it trains on unless told otherwise
    CHOICES           key -> valid values; POSITIVE: keys that must be > 0
    EMBEDDING_PARAMS  top-level attributes counted as embedding parameters (Kaplan et al.)
    SUPPORTS          what it can do beyond training: 'mup', 'scan_layers', 'remat', 'kv_cache', 'cudnn'
    Model             its nnx module: Model(cfg, spec, rngs=...), called as model(inputs, train=..., rngs=...)

Functions (static: a family is a namespace of pure functions of its config section; a
subclass takes both lists from the top level of its own module, see __init_subclass__):
    default_config()                the model section with every key and its default
    resolve(cfg)                    fill derived values in place (d_ff = 0 -> 4 d_model, ...)
    validate(cfg, spec)             problems, each naming the key, its value and what is valid
    param_counts(cfg, spec)         {'total', 'embedding', 'non_embedding'}: a hand count, term by term
    forward_flops(cfg, spec, causal)  matmul and convolution FLOPs of one forward pass over one example
    head_params(cfg)                the output head's parameters (counted in N of the FLOP convention)
    lr_groups(cfg)                  per-parameter learning-rate groups (muP), or None
    stacked_prefix(cfg)             the attribute holding every layer on a leading axis (scan), or None
    hidden_matrices(cfg)            name, ndim -> (input axes, output axes) of a hidden weight matrix or
                                    None (Muon's split); None: the family names none (Muon refused)
"""
from __future__ import annotations

import sys

# What a family module defines at its top level and its Family subclass takes from there.
INTERFACE = ('TASKS', 'DEFAULT_DATA', 'CHOICES', 'POSITIVE', 'EMBEDDING_PARAMS', 'Model', 'default_config', 'resolve',
             'validate', 'param_counts', 'forward_flops', 'head_params', 'lr_groups', 'stacked_prefix',
             'hidden_matrices')


class Family:
    name: str = ''
    TASKS: tuple = ()
    DEFAULT_DATA: str = ''
    CHOICES: dict = {}
    POSITIVE: tuple = ()
    EMBEDDING_PARAMS: tuple = ()
    SUPPORTS: frozenset = frozenset()
    Model: type = None

    def __init_subclass__(cls, **kwargs):
        """A subclass takes INTERFACE's names from its own module where it does not set them
        itself: a family file writes its functions and constants once, at the top level."""
        super().__init_subclass__(**kwargs)
        module = sys.modules[cls.__module__]
        for key in INTERFACE:
            if key in cls.__dict__ or not hasattr(module, key):
                continue
            value = getattr(module, key)
            setattr(cls, key, staticmethod(value) if callable(value) and not isinstance(value, type) else value)

    @staticmethod
    def default_config():
        raise NotImplementedError

    @staticmethod
    def resolve(cfg) -> None:
        """Nothing to derive."""

    @staticmethod
    def validate(cfg, spec) -> list[str]:
        return []

    @staticmethod
    def param_counts(cfg, spec) -> dict[str, int]:
        raise NotImplementedError

    @staticmethod
    def forward_flops(cfg, spec, causal: bool = True) -> float:
        raise NotImplementedError

    @staticmethod
    def head_params(cfg) -> int:
        """0: the last layer is an ordinary non-embedding layer."""
        return 0

    @staticmethod
    def lr_groups(cfg):
        return None

    @staticmethod
    def stacked_prefix(cfg) -> str | None:
        return None

    @staticmethod
    def hidden_matrices(cfg):
        return None
