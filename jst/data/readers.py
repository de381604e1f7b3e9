"""The datasets jst knows (``DATASETS``: shape, classes, files) and their numpy readers.

``'numpy'`` reads MNIST-format IDX ``.gz`` files (MNIST, Fashion-MNIST) and the
CIFAR-10 *binary* layout (``cifar-10-binary.tar.gz`` or an extracted
``cifar-10-batches-bin/``) with numpy alone: machines without tensorflow (GPU
boxes, TPU runtimes) use it. TFDS, the other backend, is ``jst.data.tfds_backend``.

Readers return (train, test) in file order; ``jst.data.datasets`` puts them in one
canonical order. Imports only ``jst.errors``.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import tarfile
from typing import Callable, Literal, Optional

import numpy as np

from jst import errors

Backend = Literal['auto', 'tfds', 'numpy']
BACKENDS = ('auto', 'tfds', 'numpy')
MNIST_FILES = {'train_images': 'train-images-idx3-ubyte.gz', 'train_labels': 'train-labels-idx1-ubyte.gz',
               'test_images': 't10k-images-idx3-ubyte.gz', 'test_labels': 't10k-labels-idx1-ubyte.gz'}
CIFAR10_ARCHIVE = 'cifar-10-binary.tar.gz'
CIFAR10_DIR = 'cifar-10-batches-bin'
CIFAR10_TRAIN_FILES = tuple(f'data_batch_{i}.bin' for i in range(1, 6))
CIFAR10_TEST_FILE = 'test_batch.bin'
MANUAL_DIR_ENV = 'JST_MANUAL_DIR'


class DataError(errors.UserError, ValueError):
    """Raised when a dataset cannot be found or read; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 [N, H, W, C], ``labels`` int32 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def dataset_info(name: str) -> DatasetInfo:
    """``DATASETS[name]``; an unknown name is refused with the known ones."""
    if name not in DATASETS:
        raise DataError(f'Unknown dataset {name!r}; choose one of {SUPPORTED_DATASETS}.')
    return DATASETS[name]


def expected_files(name: str) -> tuple[str, ...]:
    """File names the numpy reader (and TFDS's manual dir) expects for ``name``."""
    return dataset_info(name).files


def missing_files_message(name: str, manual_dir: str) -> str:
    """What is missing from ``manual_dir`` (the absent files by name when some of them are there) and the fix."""
    files = expected_files(name)
    absent = [f for f in files if not os.path.exists(os.path.join(manual_dir, f))]
    what = (f'{", ".join(absent)} missing from manual_dir={manual_dir!r}' if 0 < len(absent) < len(files)
            else f'no usable files in manual_dir={manual_dir!r}')
    return (f'Dataset {name!r}: {what}. '
            f'Expected {", ".join(files)} (for cifar10 the archive or an extracted '
            f'{CIFAR10_DIR}/ folder). Point --config.manual_dir (or ${MANUAL_DIR_ENV}) '
            'at the folder that holds them, e.g. '
            f'--config.manual_dir=../shared/datasets/{dataset_info(name).shared_folder}.')


# --------------------------------------------------------------------------
# numpy reader
# --------------------------------------------------------------------------
def parse_idx(raw: bytes) -> np.ndarray:
    """Parses an (uncompressed) IDX file: big-endian magic, dims, uint8 data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError('Not an IDX uint8 file (bad magic number).')
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(f'Truncated IDX file: {len(raw) - offset} bytes of data for shape {dims}.')
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _read_gz(path: str) -> bytes:
    try:
        with gzip.open(path, 'rb') as f:
            return f.read()
    except PermissionError as e:
        raise DataError(f'Cannot read {path}: permission denied. Make the file readable '
                        f'(chmod a+r) or copy the folder somewhere readable.') from e
    except (OSError, EOFError) as e:
        raise DataError(f'Cannot read {path}: {e}. Re-copy the original file.') from e


def read_mnist_numpy(manual_dir: str) -> tuple[Split, Split]:
    """Reads the four MNIST-format files (MNIST or Fashion-MNIST) from ``manual_dir``."""
    arrays = {}
    for key, fname in MNIST_FILES.items():
        path = os.path.join(manual_dir, fname)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        try:
            arrays[key] = parse_idx(_read_gz(path))
        except DataError as e:
            raise DataError(f'{path}: {e}') from e
        want_ndim, kind = (3, 'images [N, 28, 28]') if key.endswith('images') else (1, 'labels [N]')
        if arrays[key].ndim != want_ndim or (want_ndim == 3 and arrays[key].shape[1:] != (28, 28)):
            raise DataError(f'{path} holds an array of shape {arrays[key].shape}, not {kind}: is it a '
                            f'{"label" if want_ndim == 3 else "image"} file under the wrong name? Expected '
                            f'{", ".join(MNIST_FILES.values())}.')
    splits = []
    for prefix in ('train', 'test'):
        images, labels = arrays[f'{prefix}_images'], arrays[f'{prefix}_labels']
        if images.shape[0] != labels.shape[0]:
            raise DataError(f'{manual_dir}: {MNIST_FILES[prefix + "_images"]} has {images.shape[0]} images but '
                            f'{MNIST_FILES[prefix + "_labels"]} has {labels.shape[0]} labels.')
        splits.append(Split(images[..., None].copy(), labels.astype(np.int32)))
    return splits[0], splits[1]


def parse_cifar10_records(raw: bytes) -> Split:
    """Parses CIFAR-10 binary records: 1 label byte + 3,072 bytes (R, G, B planes of 32x32)."""
    record = 1 + 3 * 32 * 32
    if len(raw) % record:
        raise DataError(f'CIFAR-10 batch of {len(raw)} bytes is not a whole number of records.')
    data = np.frombuffer(raw, np.uint8).reshape(-1, record)
    images = data[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), data[:, 0].astype(np.int32))


def _cifar10_members(manual_dir: str) -> dict[str, bytes]:
    wanted = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
    extracted = os.path.join(manual_dir, CIFAR10_DIR)
    if os.path.isdir(extracted):
        out = {}
        for fname in wanted:
            with open(os.path.join(extracted, fname), 'rb') as f:
                out[fname] = f.read()
        return out
    archive = os.path.join(manual_dir, CIFAR10_ARCHIVE)
    if not os.path.exists(archive):
        raise FileNotFoundError(archive)
    out = {}
    try:
        with tarfile.open(archive, 'r:gz') as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if base in wanted:
                    out[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f'Cannot read {archive}: {e}. Re-copy the archive.') from e
    missing = set(wanted) - set(out)
    if missing:
        raise DataError(f'{archive} lacks {sorted(missing)}.')
    return out


def read_cifar10_numpy(manual_dir: str) -> tuple[Split, Split]:
    """Reads CIFAR-10 in the official binary layout (archive or extracted folder)."""
    members = _cifar10_members(manual_dir)
    parts = [parse_cifar10_records(members[f]) for f in CIFAR10_TRAIN_FILES]
    train = Split(np.concatenate([p.images for p in parts]),
                  np.concatenate([p.labels for p in parts]))
    return train, parse_cifar10_records(members[CIFAR10_TEST_FILE])


def read_numpy(name: str, manual_dir: Optional[str]) -> tuple[Split, Split]:
    """(train, test) in file order, read with numpy alone."""
    if not manual_dir:
        raise DataError(f'The numpy reader needs the original files of {name!r}: set '
                        f'--config.manual_dir=DIR (or ${MANUAL_DIR_ENV}) to the folder with '
                        f'{", ".join(expected_files(name))}.')
    try:
        return dataset_info(name).read(manual_dir)
    except FileNotFoundError as e:
        raise DataError(missing_files_message(name, manual_dir)) from e


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What jst knows of a dataset: images [H, W, C], classes (the model head's width), the original files the
    numpy reader (and TFDS's manual dir) reads, the folder of ``../shared/datasets`` that holds them, and the
    per-channel statistics inputs are standardised by (None: inputs stay in [0, 1])."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    files: tuple[str, ...]
    read: Callable[[str], tuple[Split, Split]]
    shared_folder: str
    channel_stats: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None  # (mean, std) of train pixels / 255


# A new dataset: its reader above and one line here (TFDS reads it by the same name where it knows it).
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo('mnist', (28, 28, 1), 10, tuple(MNIST_FILES.values()), read_mnist_numpy, 'mnist'),
    DatasetInfo('fashion_mnist', (28, 28, 1), 10, tuple(MNIST_FILES.values()), read_mnist_numpy, 'fashion_mnist'),
    DatasetInfo('cifar10', (32, 32, 3), 10, (CIFAR10_ARCHIVE,), read_cifar10_numpy, 'cifar10-jpeg75',
                ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
)}
SUPPORTED_DATASETS: tuple[str, ...] = tuple(DATASETS)
