"""IDX files, the image pipeline and the teacher source."""
import gzip

import numpy as np
import pytest

from scalelab import data
from scalelab.core.errors import ConfigError
from scalelab.data import images, teacher
from scalelab.training import config


def write_idx(path, array: np.ndarray, code: int = 0x08):
    header = bytes([0, 0, code, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
    (gzip.open if str(path).endswith('.gz') else open)(path, 'wb').write(payload)


@pytest.mark.parametrize('name, dtype, code', [('x.idx', np.uint8, 0x08), ('x.idx.gz', np.uint8, 0x08),
                                               ('f.idx', np.float32, 0x0D), ('i.idx', np.int32, 0x0C)])
def test_idx_round_trip(tmp_path, name, dtype, code):
    array = (np.arange(3 * 4 * 5) % 251).reshape(3, 4, 5).astype(dtype)
    write_idx(tmp_path / name, array, code)
    np.testing.assert_array_equal(images.read_idx(tmp_path / name), array)


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_idx(tmp_path / 'x.idx', np.zeros((10, 28, 28), np.uint8))
    raw = (tmp_path / 'x.idx').read_bytes()
    (tmp_path / 'short.idx').write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r'short.idx: truncated or corrupt IDX data: header says shape '
                                         r'\(10, 28, 28\) \(7856 bytes in all\), file has 7756 bytes'):
        images.read_idx(tmp_path / 'short.idx')
    (tmp_path / 'header.idx').write_bytes(raw[:9])
    with pytest.raises(ValueError, match='truncated IDX header'):
        images.read_idx(tmp_path / 'header.idx')


def test_corrupt_idx_is_a_clear_error(tmp_path):
    (tmp_path / 'bad.idx').write_bytes(b'\x1f\x8b\x08\x00garbage')
    with pytest.raises(ValueError, match=r'bad.idx: not an IDX file \(the first bytes must be 0, 0'):
        images.read_idx(tmp_path / 'bad.idx')


def test_fashion_mnist_read_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (('train', 40), ('t10k', 10)):
        written[split] = (rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n).astype(np.uint8))
        write_idx(tmp_path / f'{split}-images-idx3-ubyte.gz', written[split][0])
        write_idx(tmp_path / f'{split}-labels-idx1-ubyte.gz', written[split][1])
    cfg = images.default_config()
    cfg.path = str(tmp_path)
    source = images.load(cfg, global_batch=8, seed=0)
    assert source.x_train.shape == (40, 28, 28, 1) and source.x_test.shape == (10, 28, 28, 1)
    assert abs(source.x_train.mean()) < 1e-5 and source.x_train.std() == pytest.approx(1, rel=1e-4)
    # every label is the one written beside its image, in order
    np.testing.assert_array_equal(source.y_train, written['train'][1])
    np.testing.assert_array_equal(source.y_test, written['t10k'][1])
    pixels = written['train'][0].astype(np.float64)  # the images are the written pixels, standardized
    np.testing.assert_allclose(source.x_train[..., 0], (pixels - pixels.mean()) / pixels.std(), rtol=1e-4, atol=1e-4)


def test_missing_dataset_names_the_install_command(tmp_path):
    cfg = config.base_config('mlp', 'images')
    cfg.data.path = str(tmp_path / 'nowhere')
    with pytest.raises(ConfigError, match=r'sudo apt-get install dataset-fashion-mnist.*digits'):
        config.resolve(cfg, 1)


@pytest.fixture(scope='module')
def digits():
    cfg = images.default_config()
    cfg.update(dataset='digits', train_examples=32)
    return images.load(cfg, global_batch=8, seed=1)


def test_an_epoch_visits_every_example_once(digits):
    seen = np.concatenate([digits.train_batch(step, slice(0, 8))['inputs'] for step in range(4)])
    as_rows = {row.tobytes() for row in seen}
    assert len(as_rows) == 32 == len({row.tobytes() for row in digits.x_train})
    next_epoch = np.concatenate([digits.train_batch(step, slice(0, 8))['inputs'] for step in range(4, 8)])
    assert not np.array_equal(seen, next_epoch)  # reshuffled


def test_batches_are_pure_in_step_and_split_by_rows(digits):
    a = digits.train_batch(5, slice(0, 8))
    np.testing.assert_array_equal(a['inputs'], digits.train_batch(5, slice(0, 8))['inputs'])
    np.testing.assert_array_equal(digits.train_batch(5, slice(2, 6))['inputs'], a['inputs'][2:6])


def test_augmentation_is_deterministic_and_changes_images():
    cfg = images.default_config()
    cfg.update(dataset='digits', augment=True)
    plain_cfg = images.default_config()
    plain_cfg.update(dataset='digits')
    augmented, plain = images.load(cfg, 16, seed=1), images.load(plain_cfg, 16, seed=1)
    a = augmented.train_batch(3, slice(0, 16))
    np.testing.assert_array_equal(a['inputs'], augmented.train_batch(3, slice(0, 16))['inputs'])
    np.testing.assert_array_equal(augmented.train_batch(3, slice(4, 8))['inputs'], a['inputs'][4:8])
    np.testing.assert_array_equal(a['targets'], plain.train_batch(3, slice(0, 16))['targets'])
    assert not np.array_equal(a['inputs'], plain.train_batch(3, slice(0, 16))['inputs'])


def test_evaluation_covers_the_test_split_exactly_once(digits):
    n_test = len(digits.y_test)
    batches = digits.eval_batches()
    assert batches == -(-n_test // 8)
    weights = np.concatenate([digits.eval_batch(i, slice(0, 8))['weights'] for i in range(batches)])
    assert weights.sum() == n_test and weights[:n_test].all()


def test_teacher_targets_are_the_teacher_function():
    cfg = teacher.default_config()
    source = data.load(cfg, global_batch=32, seed=0)
    batch = source.train_batch(0, slice(0, 32))
    np.testing.assert_allclose(batch['targets'], source.teacher(batch['inputs']), rtol=1e-6)
    again = teacher.Teacher.random(cfg)  # the same teacher for every run and seed
    np.testing.assert_array_equal(again.weights[0], source.teacher.weights[0])
    assert batch['targets'].std() > 0.1  # a non-trivial target
