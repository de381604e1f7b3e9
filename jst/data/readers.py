"""Reading the original distribution files of a dataset: numpy readers and TFDS.

* ``'numpy'``: MNIST-format IDX ``.gz`` files (MNIST, Fashion-MNIST) and the
  CIFAR-10 *binary* layout (``cifar-10-binary.tar.gz`` or an extracted
  ``cifar-10-batches-bin/``), read with numpy alone: machines without
  tensorflow (GPU boxes, TPU runtimes) use it.
* ``'tfds'``: TensorFlow Datasets; with ``manual_dir`` TFDS prepares the
  dataset from the original files in that folder without network access.
* ``choose_backend``: ``'auto'`` picks TFDS where tensorflow is installed and
  the files in ``manual_dir`` pass TFDS's registered checksums, numpy
  otherwise (e.g. a recompressed copy), and says why.

Readers return (train, test) in file order; ``jst.data.datasets`` puts them in one
canonical order. Imports no other jst module.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import os
import socket
import tarfile
import urllib.parse
from typing import Any, Literal, Optional

import numpy as np

from jst import errors

Backend = Literal['auto', 'tfds', 'numpy']
BACKENDS = ('auto', 'tfds', 'numpy')
SUPPORTED_DATASETS = ('mnist', 'fashion_mnist', 'cifar10')
IMAGE_SHAPES = {'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}  # [H, W, C]
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


def expected_files(name: str) -> tuple[str, ...]:
    """File names the numpy reader (and TFDS's manual dir) expects for ``name``."""
    if name in ('mnist', 'fashion_mnist'):
        return tuple(MNIST_FILES.values())
    if name == 'cifar10':
        return (CIFAR10_ARCHIVE,)
    raise DataError(f'Unknown dataset {name!r}; choose one of {SUPPORTED_DATASETS}.')


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
            f'--config.manual_dir=../shared/datasets/{"cifar10-jpeg75" if name == "cifar10" else name}.')


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


# SHA-256 of the official MNIST files (TFDS's registered checksums; ../shared/datasets/mnist matches them).
MNIST_SHA256 = {
    'train-images-idx3-ubyte.gz': '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
    'train-labels-idx1-ubyte.gz': '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
    't10k-images-idx3-ubyte.gz': '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
    't10k-labels-idx1-ubyte.gz': 'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
}


def check_dataset_files(name: str, manual_dir: Optional[str]) -> None:
    """Refuses IDX files that are another dataset's (MNIST and Fashion-MNIST share file names): the official MNIST
    files asked for as ``fashion_mnist``, or (with TFDS installed, whose checksums say so) Fashion-MNIST's files
    asked for as ``mnist``."""
    if name not in ('mnist', 'fashion_mnist') or not manual_dir:
        return
    paths = {f: os.path.join(manual_dir, f) for f in MNIST_SHA256}
    is_mnist = all(os.path.exists(p) and sha256_of(p) == MNIST_SHA256[f] for f, p in paths.items())
    is_fashion = False
    if name == 'mnist' and not is_mnist and tensorflow_available():
        try:
            is_fashion = not tfds_checksum_mismatches('fashion_mnist', manual_dir)
        except Exception:  # pylint: disable=broad-except
            is_fashion = False
    if (name == 'fashion_mnist' and is_mnist) or is_fashion:
        other = 'mnist' if is_mnist else 'fashion_mnist'
        raise DataError(f'The files in {manual_dir} are {other!r}\'s (byte-identical to its official files), not '
                        f'{name!r}\'s: pass --config.dataset={other}, or point --config.manual_dir at {name}\'s files.')


def read_numpy(name: str, manual_dir: Optional[str]) -> tuple[Split, Split]:
    """(train, test) in file order, read with numpy alone."""
    if not manual_dir:
        raise DataError(f'The numpy reader needs the original files of {name!r}: set '
                        f'--config.manual_dir=DIR (or ${MANUAL_DIR_ENV}) to the folder with '
                        f'{", ".join(expected_files(name))}.')
    try:
        if name in ('mnist', 'fashion_mnist'):
            return read_mnist_numpy(manual_dir)
        if name == 'cifar10':
            return read_cifar10_numpy(manual_dir)
    except FileNotFoundError as e:
        raise DataError(missing_files_message(name, manual_dir)) from e
    raise DataError(f'Unknown dataset {name!r}; choose one of {SUPPORTED_DATASETS}.')


# --------------------------------------------------------------------------
# TFDS reader
# --------------------------------------------------------------------------
def tensorflow_available() -> bool:
    return (importlib.util.find_spec('tensorflow') is not None
            and importlib.util.find_spec('tensorflow_datasets') is not None)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def tfds_checksum_mismatches(name: str, manual_dir: str) -> list[str]:
    """Files in ``manual_dir`` that are missing or differ from TFDS's registered checksums."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    url_infos = tfds.builder_cls(name).url_infos or {}
    paths = {os.path.join(manual_dir, info.filename): info for info in url_infos.values()}
    return [info.filename for path, info in paths.items()
            if not os.path.exists(path) or sha256_of(path) != info.checksum]


def read_tfds(name: str, manual_dir: Optional[str], data_dir: Optional[str]) -> tuple[Split, Split]:
    """(train, test) through TFDS; offline when ``manual_dir`` holds the original files."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()  # tqdm bars flood logs and notebooks; jst logs what it reads in one line
    builder = tfds.builder(name, data_dir=data_dir)
    if manual_dir:  # those files are used or refused: never bypassed by a prepared copy in data_dir
        bad = tfds_checksum_mismatches(name, manual_dir)
        if bad:
            raise DataError(f'{", ".join(bad)} in manual_dir={manual_dir!r} missing or not byte-identical to '
                            "TFDS's registered files, so TFDS cannot use that folder. Fix the folder, or read "
                            'any copy of the original files with --config.data_backend=numpy.')
    elif not builder.is_prepared():
        _check_reachable(name, builder)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    try:
        both = [tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1)) for s in ('train', 'test')]
    except Exception as e:  # pylint: disable=broad-except
        if not type(e).__module__.startswith('tensorflow'):  # e.g. tf.errors.DataLossError: a corrupt prepared copy
            raise
        raise DataError(f'TFDS\'s prepared {name} in {builder.data_dir} is unreadable ({type(e).__name__}): '
                        'delete that folder to prepare it again, or pass --config.data_backend=numpy '
                        '--config.manual_dir=DIR.') from e
    return tuple(Split(np.asarray(a['image'], np.uint8), np.asarray(a['label'], np.int32)) for a in both)


def _check_reachable(name: str, builder: Any) -> None:
    """Fails in seconds, naming manual_dir, when TFDS would have to download from an unreachable host."""
    hosts = sorted({urllib.parse.urlparse(url).hostname for url in (builder.url_infos or {})} - {None})
    for host in hosts:
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError as e:
            raise DataError(f'{name} is not prepared in TFDS\'s data_dir and {host} cannot be reached ({e}). '
                            f'Offline, pass --config.manual_dir=DIR (or ${MANUAL_DIR_ENV}) with the original files '
                            f'({", ".join(expected_files(name))}).') from e


def choose_backend(name: str, requested: str, manual_dir: Optional[str]) -> tuple[str, str]:
    """Returns (backend, reason) for ``requested`` in {'auto', 'tfds', 'numpy'}."""
    if requested in ('tfds', 'numpy'):
        return requested, 'requested by data_backend'
    if requested != 'auto':
        raise DataError(f'data_backend must be one of {BACKENDS}, not {requested!r}.')
    if not tensorflow_available():
        return 'numpy', 'tensorflow/tensorflow_datasets are not installed'
    if not manual_dir:
        return 'tfds', 'no manual_dir: TFDS downloads (or reuses its data_dir)'
    try:
        bad = tfds_checksum_mismatches(name, manual_dir)
    except Exception as e:  # pylint: disable=broad-except
        return 'numpy', f'could not check TFDS checksums ({e})'
    if bad:
        return 'numpy', (f'{", ".join(bad)} in {manual_dir} missing or not byte-identical to '
                         "TFDS's registered checksums")
    return 'tfds', f'files in {manual_dir} match TFDS checksums'
