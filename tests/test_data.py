"""Byte corpus, file split, and step-indexed batches."""
import jax
import numpy as np
import pytest

from scalelab.core import parallel
from scalelab.data import pipeline, text
from scalelab import data as data_lib
from tests.helpers import STDLIB_JSON, tiny_lm


@pytest.fixture(scope='module')
def source():
    cfg = tiny_lm()
    return data_lib.load(cfg.data, global_batch=16, seed=3)


def test_default_corpus_is_the_stdlib_source_without_site_packages():
    files = text.list_files('', '*.py')
    assert len(files) > 500
    assert any(p.name == 'json' or p.parent.name == 'json' for p in files)
    assert not any('site-packages' in p.parts for p in files)


def test_split_by_file_is_disjoint_complete_and_stable():
    files = text.list_files(str(text.stdlib_dir()), '*.py')[:200]
    train, held_out = text.split_files(files, 0.1)
    assert set(train).isdisjoint(held_out) and set(train) | set(held_out) == set(files)
    assert len(held_out) == 20
    # the held-out set depends on the files, not on their order or on other files
    assert set(text.split_files(list(reversed(files)), 0.1)[1]) == set(held_out)
    assert set(text.split_files(files + files[:0], 0.1)[1]) == set(held_out)


def test_tokens_are_the_files_bytes(source):
    files = text.list_files(STDLIB_JSON, '*.py')
    total = sum(p.stat().st_size for p in files)
    assert source.train.size + source.eval.size == total
    train_files, _ = text.split_files(files, 0.2)
    assert bytes(source.train.tokens[:100]) == train_files[0].read_bytes()[:100]


def test_batch_is_a_pure_function_of_seed_and_step(source):
    a = source.train_batch(7, slice(0, 16))
    b = source.train_batch(7, slice(0, 16))
    c = source.train_batch(8, slice(0, 16))
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
    assert not np.array_equal(a['inputs'], c['inputs'])
    np.testing.assert_array_equal(a['inputs'][:, 1:], a['targets'][:, :-1])  # next-byte targets
    # a process reading rows 4..8 gets exactly those rows of the global batch
    np.testing.assert_array_equal(source.train_batch(7, slice(4, 8))['inputs'], a['inputs'][4:8])
    # eval batches come from the held-out bytes: every window occurs in the eval split
    window = bytes(source.eval_batch(0, slice(0, 1))['inputs'][0].astype(np.uint8))
    assert window in bytes(source.eval.tokens)


def test_global_batch_assembles_process_rows_on_the_mesh(source):
    mesh = parallel.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
    rows = pipeline.process_rows(mesh, 16)
    assert rows == slice(0, 16)  # one process holds every row
    batch = pipeline.to_global(mesh, source.train_batch(0, rows), 16)
    assert batch['inputs'].shape == (16, 32)
    assert batch['inputs'].sharding.spec == jax.sharding.PartitionSpec(('data', 'fsdp'), None)
    np.testing.assert_array_equal(np.asarray(batch['inputs']), source.train_batch(0, rows)['inputs'])
