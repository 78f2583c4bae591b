"""Tests run on CPU with 8 virtual devices and the persistent compilation cache."""
import os

# Compilation dominates the suite on CPU, and tests need right answers, not fast
# kernels: skip LLVM's expensive optimisations (inherited by subprocesses too).
os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0',
                                    '--xla_llvm_disable_expensive_passes=true']).strip()

import jax  # noqa: E402

jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_num_cpu_devices', 8)

from scalelab.core import runtime  # noqa: E402
from tests.helpers import TEST_CACHE  # noqa: E402

runtime.configure(cache_dir=TEST_CACHE)
# MFU is reported, never asserted; a fixed peak keeps tests from timing a matmul.
os.environ.setdefault('SCALELAB_PEAK_FLOPS', '1e11')


import pytest  # noqa: E402

from tests.helpers import HF_CONTEXT, save_random_gpt2  # noqa: E402


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    """A random GPT-2 saved with save_pretrained (test_hf, test_downstream)."""
    return save_random_gpt2(tmp_path_factory.mktemp('hf_gpt2'), HF_CONTEXT)


@pytest.fixture(scope='module')
def imported(hf_dir, tmp_path_factory):
    """hf_dir imported into a scalelab workdir with `scalelab.hf import`'s code."""
    from scalelab.use import hf
    workdir = tmp_path_factory.mktemp('imported') / 'w'
    hf.import_dir(hf_dir, workdir)
    return workdir
