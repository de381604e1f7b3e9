"""TFDS as a backend, and the checksums that say when it can read a folder of original files.

* ``choose_backend``: ``'auto'`` picks TFDS where tensorflow is installed and the files in ``manual_dir`` pass
  TFDS's registered checksums, numpy otherwise (e.g. a recompressed copy), and says why.
* ``read_tfds``: (train, test) through TFDS, offline from ``manual_dir``.
* ``check_dataset_files``: refuses one dataset's files asked for as another's (MNIST and Fashion-MNIST share names).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import socket
import urllib.parse
from typing import Any, Optional

import numpy as np

from jst.data.readers import BACKENDS, MANUAL_DIR_ENV, DataError, Split, expected_files


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
    with preparation_lock(builder.data_dir):  # two processes preparing at once collide in TFDS's rename
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


@contextlib.contextmanager
def preparation_lock(dataset_dir: str):
    """An exclusive lock for preparing a dataset folder, shared by every process on this machine (a lock file
    beside ``dataset_dir``): the first prepares it, the others wait and find it prepared."""
    parent = os.path.dirname(os.fspath(dataset_dir).rstrip('/'))
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, '.jst_prepare.lock'), 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
