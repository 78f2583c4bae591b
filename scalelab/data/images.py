"""Image classification data: Fashion-MNIST from IDX files, or scikit-learn's digits.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package (no
download at run time); scikit-learn bundles its 8x8 digits. Batch `step` is
a slice of an epoch's permutation drawn from (seed, epoch), and augmentation
(random crop after 2-pixel padding, horizontal flip) is drawn from (seed,
step): a pure function of the step, read row by row per process.
"""
from __future__ import annotations

import dataclasses
import gzip
import math
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from scalelab.core.errors import ConfigError
from scalelab.core.tasks import DataSpec

DATASETS = {  # name: (height, width, channels, classes)
    'fashion_mnist': (28, 28, 1, 10),
    'digits': (8, 8, 1, 10),
}
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
INSTALL_HINT = ('install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), '
                'or use the bundled scikit-learn digits (data.dataset=digits, or the experiment\'s :digits)')
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='images',
        dataset='fashion_mnist',   # fashion_mnist | digits
        path=FASHION_MNIST_DIR,    # directory of the IDX files (fashion_mnist)
        augment=False,             # random crop (2-pixel pad) and horizontal flip
        train_examples=0,          # > 0: train on only the first this-many examples
        eval_examples=0,           # the evaluation set: the first this-many test examples (0 = all of them)
    ))


def spec(cfg) -> DataSpec:
    height, width, channels, classes = DATASETS[cfg.dataset]
    return DataSpec('classification', (height, width, channels), classes)


def validate(cfg) -> list[str]:
    problems = []
    if cfg.dataset not in DATASETS:
        problems.append(f'data.dataset={cfg.dataset!r}: not one of {", ".join(DATASETS)}')
    elif cfg.dataset == 'fashion_mnist' and not Path(cfg.path).is_dir():
        problems.append(f'data.path={cfg.path!r}: no Fashion-MNIST directory there; {INSTALL_HINT}')
    for key in ('train_examples', 'eval_examples'):
        if cfg[key] < 0:
            problems.append(f'data.{key}={cfg[key]}: must be non-negative (0 = all)')
    return problems


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array, checking header and length."""
    path = Path(path)
    raw = (gzip.open if path.suffix == '.gz' else open)(path, 'rb').read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f'{path}: not an IDX file (the first bytes must be 0, 0, a type code in '
                         f'{sorted(_IDX_DTYPES)}; got {list(raw[:4])})')
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f'{path}: truncated IDX header ({len(raw)} bytes, {header} needed for {ndim} dims)')
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f'{path}: truncated or corrupt IDX data: header says shape {shape} '
                         f'({expected} bytes in all), file has {len(raw)} bytes')
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _idx_file(directory: Path, stem: str) -> Path:
    for name in (stem, stem + '.gz'):
        if (directory / name).is_file():
            return directory / name
    raise ConfigError([f'data.path={str(directory)!r}: no {stem}[.gz]; {INSTALL_HINT}'])


def load_arrays(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images NxHxWxC uint8-range floats, train labels, test images, test labels)."""
    if cfg.dataset == 'fashion_mnist':
        d = Path(cfg.path)
        x_train, y_train, x_test, y_test = (read_idx(_idx_file(d, stem)) for stem in (
            'train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'))
        return x_train[..., None], y_train, x_test[..., None], y_test
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    digits = load_digits()
    images, labels = digits.images[..., None] * (255.0 / 16.0), digits.target
    order = np.random.default_rng(0).permutation(len(labels))  # a fixed 80/20 split
    cut = int(0.8 * len(labels))
    return images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]]


@dataclasses.dataclass(frozen=True)
class ImageSource:
    x_train: np.ndarray  # N x H x W x C float32, normalized
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    global_batch: int
    seed: int
    augment: bool

    bytes_per_token = None

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        n, batch = len(self.y_train), self.global_batch
        position_B = step * batch + np.arange(batch)
        epoch_B = position_B // n
        index_B = np.empty(batch, np.int64)
        for epoch in np.unique(epoch_B):
            mine = epoch_B == epoch
            index_B[mine] = np.random.default_rng((self.seed, 2, int(epoch))).permutation(n)[position_B[mine] % n]
        x = self.x_train[index_B[rows]]
        if self.augment:
            x = _augment(x, np.random.default_rng((self.seed, 3, step)), batch, rows)
        return {'inputs': x, 'targets': self.y_train[index_B[rows]].astype(np.int32)}

    def eval_batches(self) -> int:
        """Enough batches to cover the evaluation examples once."""
        return math.ceil(len(self.y_test) / self.global_batch)

    def eval_batch(self, index: int, rows: slice) -> dict[str, np.ndarray]:
        """Rows of the test split in order; past its end, padding with weight 0."""
        position_B = index * self.global_batch + np.arange(self.global_batch)
        real_B = position_B < len(self.y_test)
        take = np.where(real_B, position_B, 0)[rows]
        return {'inputs': self.x_test[take], 'targets': self.y_test[take].astype(np.int32),
                'weights': real_B[rows].astype(np.float32)}

    def describe(self) -> dict:
        return dict(train_examples=int(len(self.y_train)), test_examples=int(len(self.y_test)),
                    image_shape=list(self.x_train.shape[1:]))


def _augment(x_BxHxWxC: np.ndarray, rng: np.random.Generator, batch: int, rows: slice) -> np.ndarray:
    """Random 2-pixel-shift crops and horizontal flips, drawn for the whole global batch."""
    shifts = rng.integers(0, 5, size=(batch, 2))[rows]
    flips = rng.random(batch)[rows] < 0.5
    h, w = x_BxHxWxC.shape[1:3]
    padded = np.pad(x_BxHxWxC, ((0, 0), (2, 2), (2, 2), (0, 0)))
    out = np.stack([padded[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts)])
    out[flips] = out[flips, :, ::-1]
    return out


def load(cfg, global_batch: int, seed: int) -> ImageSource:
    x_train, y_train, x_test, y_test = load_arrays(cfg)
    if cfg.train_examples:
        x_train, y_train = x_train[:cfg.train_examples], y_train[:cfg.train_examples]
    if cfg.eval_examples:
        x_test, y_test = x_test[:cfg.eval_examples], y_test[:cfg.eval_examples]
    x_train = np.asarray(x_train, np.float32)
    mean, std = x_train.mean(), x_train.std()  # statistics of the training split only
    normalize = lambda x: ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)
    return ImageSource(normalize(x_train), np.asarray(y_train), normalize(x_test), np.asarray(y_test),
                       global_batch, seed, cfg.augment)
