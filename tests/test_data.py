"""Data readers: IDX/CIFAR parsing, TFDS vs numpy identity, 'auto' choice, clear errors."""

import gzip
import os
import shutil

import numpy as np
import pytest

from jst.data import datasets as D
from jst.data import readers
from jst.data import tfds_backend


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_roundtrip_and_truncation():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(readers.parse_idx(_idx(a)), a)
    with pytest.raises(D.DataError, match='Truncated'):
        readers.parse_idx(_idx(a)[:-1])
    with pytest.raises(D.DataError, match='magic'):
        readers.parse_idx(b'\x01\x02\x03\x04')


def test_parse_cifar_records_channel_layout():
    img = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    raw = b''.join(bytes([lab]) + im.transpose(2, 0, 1).tobytes() for lab, im in zip([3, 7], img))
    split = readers.parse_cifar10_records(raw)
    np.testing.assert_array_equal(split.images, img)
    np.testing.assert_array_equal(split.labels, [3, 7])
    with pytest.raises(D.DataError, match='whole number'):
        readers.parse_cifar10_records(raw[:-5])


def test_numpy_mnist_reader_shapes(mnist_dir):
    train, test = readers.read_numpy('mnist', mnist_dir)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and set(np.unique(train.labels)) == set(range(10))


@pytest.mark.slow  # prepares MNIST with TFDS
def test_tfds_and_numpy_give_identical_arrays(mnist_dir, tfds_data_dir):
    pytest.importorskip('tensorflow_datasets')
    a = D.load_dataset('mnist', mnist_dir, tfds_data_dir, backend='tfds')
    b = D.load_dataset('mnist', mnist_dir, backend='numpy')
    assert (a.backend, b.backend) == ('tfds', 'numpy')
    for split in ('train', 'validation', 'test'):
        np.testing.assert_array_equal(getattr(a, split).images, getattr(b, split).images)
        np.testing.assert_array_equal(getattr(a, split).labels, getattr(b, split).labels)


def test_auto_uses_tfds_for_checksum_identical_files(mnist_dir):
    pytest.importorskip('tensorflow_datasets')
    backend, reason = tfds_backend.choose_backend('mnist', 'auto', mnist_dir)
    assert backend == 'tfds', reason


def test_auto_falls_back_to_numpy_for_recompressed_copy(mnist_dir, tmp_path):
    for fname in readers.MNIST_FILES.values():
        with gzip.open(os.path.join(mnist_dir, fname), 'rb') as src, \
                gzip.open(tmp_path / fname, 'wb', compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
    backend, reason = tfds_backend.choose_backend('mnist', 'auto', str(tmp_path))
    assert backend == 'numpy'
    if tfds_backend.tensorflow_available():
        assert 'checksum' in reason
    ds = D.load_dataset('mnist', str(tmp_path), backend='auto', validation_size=1000)
    ref = D.load_dataset('mnist', mnist_dir, backend='numpy', validation_size=1000)
    np.testing.assert_array_equal(ds.train.images, ref.train.images)


def test_missing_files_error_names_manual_dir_and_files(tmp_path):
    with pytest.raises(D.DataError, match=r'manual_dir.*train-images-idx3-ubyte\.gz'):
        D.load_dataset('mnist', str(tmp_path), backend='numpy')
    with pytest.raises(D.DataError, match='does not exist'):
        D.load_dataset('mnist', str(tmp_path / 'nope'), backend='numpy')
    with pytest.raises(D.DataError, match='cifar-10-binary.tar.gz'):
        D.load_dataset('cifar10', str(tmp_path), backend='numpy')


def test_one_missing_file_is_named(mnist_dir, tmp_path):
    import shutil  # pylint: disable=g-import-not-at-top
    for name in ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz'):
        shutil.copy(os.path.join(mnist_dir, name), tmp_path / name)
    with pytest.raises(D.DataError, match=r"'mnist': t10k-labels-idx1-ubyte\.gz missing from manual_dir="):
        D.load_dataset('mnist', str(tmp_path), backend='numpy')


def test_numpy_reader_without_manual_dir_explains(monkeypatch):
    monkeypatch.delenv(readers.MANUAL_DIR_ENV, raising=False)
    with pytest.raises(D.DataError, match='manual_dir'):
        D.load_dataset('mnist', None, backend='numpy')


def test_manual_dir_from_environment(mnist_dir, monkeypatch):
    monkeypatch.setenv(readers.MANUAL_DIR_ENV, mnist_dir)
    ds = D.load_dataset('mnist', None, backend='numpy', validation_size=100)
    assert len(ds.validation) == 100


def test_validation_split_is_fixed_and_disjoint(mnist_dir):
    a = D.load_dataset('mnist', mnist_dir, backend='numpy', validation_size=5000)
    assert len(a.train) == 55000 and len(a.validation) == 5000 and len(a.test) == 10000
    train_keys = {im.tobytes() for im in a.train.images[:20000]}
    overlap = sum(im.tobytes() in train_keys for im in a.validation.images)
    assert overlap < 5  # MNIST holds a handful of exact duplicate images, nothing more


def test_cifar10_numpy_reader(cifar10_dir):
    ds = D.load_dataset('cifar10', cifar10_dir, backend='auto', validation_size=5000)
    assert ds.backend == 'numpy'  # the JPEG q75 copy is not checksum-identical
    assert ds.train.images.shape == (45000, 32, 32, 3) and ds.test.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(ds.test.labels), [1000] * 10)
    x = D.preprocess(ds.train.images[:1000], 'cifar10')
    assert abs(float(x.mean())) < 0.2


def test_permute_pixels_is_a_fixed_permutation():
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    p1, p2 = D.permute_pixels(x, 1), D.permute_pixels(x, 1)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(np.sort(p1.reshape(2, -1), 1), x.reshape(2, -1))
    assert not np.array_equal(p1, x)


@pytest.mark.slow  # prepares with TFDS
def test_tfds_never_bypasses_a_bad_manual_dir(mnist_dir, tfds_data_dir, tmp_path):
    """Fault probe, finding 6: with a prepared TFDS copy in data_dir, a truncated or swapped manual_dir
    was silently ignored; now those files are used or refused."""
    pytest.importorskip('tensorflow_datasets')
    D.load_dataset('mnist', mnist_dir, tfds_data_dir, backend='tfds', validation_size=1000)  # the cache
    bad = tmp_path / 'bad'
    shutil.copytree(mnist_dir, bad)
    with open(bad / 'train-labels-idx1-ubyte.gz', 'r+b') as f:
        f.truncate(100)
    with pytest.raises(D.DataError, match=r'train-labels-idx1-ubyte.gz in manual_dir=.* not byte-identical'):
        D.load_dataset('mnist', str(bad), tfds_data_dir, backend='tfds')


@pytest.mark.slow  # prepares MNIST with TFDS
def test_a_corrupt_prepared_tfds_copy_is_one_clear_error(mnist_dir, tfds_data_dir, tmp_path):
    """The probe's corrupt TFDS cache ended in a TensorFlow traceback."""
    pytest.importorskip('tensorflow_datasets')
    D.load_dataset('mnist', mnist_dir, tfds_data_dir, backend='tfds', validation_size=1000)  # prepared there
    copy = tmp_path / 'tfds'
    shutil.copytree(tfds_data_dir, copy)
    shard = sorted(copy.glob('mnist/*/mnist-train.tfrecord*'))[0]
    raw = bytearray(shard.read_bytes())
    raw[1000:1100] = b'x' * 100
    shard.write_bytes(bytes(raw))
    with pytest.raises(D.DataError, match=r"TFDS's prepared mnist in .* is unreadable \(DataLossError\): delete"):
        D.load_dataset('mnist', None, str(copy), backend='tfds')


def test_offline_download_fails_fast_naming_manual_dir(tmp_path, monkeypatch):
    """Finding 6: no manual_dir and nothing prepared: offline, the error comes in seconds and names the fix."""
    pytest.importorskip('tensorflow_datasets')
    import socket  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    monkeypatch.delenv(readers.MANUAL_DIR_ENV, raising=False)

    def offline(*args, **kwargs):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(socket, 'create_connection', offline)  # offline here, whatever the machine
    start = time.time()
    with pytest.raises(D.DataError, match=r'cannot be reached.*--config.manual_dir'):
        D.load_dataset('mnist', None, str(tmp_path / 'fresh'), backend='tfds')
    assert time.time() - start < 30


def test_swapped_files_are_named(mnist_dir, tmp_path):
    """Finding 6: image and label files swapped gave a TypeError; now the file and the fix are named."""
    swapped = tmp_path / 'swapped'
    shutil.copytree(mnist_dir, swapped)
    os.rename(swapped / 'train-images-idx3-ubyte.gz', swapped / 'tmp.gz')
    os.rename(swapped / 'train-labels-idx1-ubyte.gz', swapped / 'train-images-idx3-ubyte.gz')
    os.rename(swapped / 'tmp.gz', swapped / 'train-labels-idx1-ubyte.gz')
    with pytest.raises(D.DataError, match=r'train-images-idx3-ubyte.gz holds an array of shape \(60000,\), not '
                                          r'images.*wrong name'):
        D.load_dataset('mnist', str(swapped), backend='numpy')


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads anything')
def test_unreadable_file_says_permission(mnist_dir, tmp_path):
    locked = tmp_path / 'locked'
    shutil.copytree(mnist_dir, locked)
    os.chmod(locked / 'train-images-idx3-ubyte.gz', 0)
    with pytest.raises(D.DataError, match='permission denied'):
        D.load_dataset('mnist', str(locked), backend='numpy')


def test_dataset_name_and_files_must_agree(mnist_dir):
    """Issue 20 (c): MNIST's official files asked for as fashion_mnist are refused naming both (they share file
    names, so the reader alone would label MNIST results "fashion_mnist"); as mnist they load."""
    with pytest.raises(D.DataError, match="are 'mnist'.s .*--config.dataset=mnist"):
        D.load_dataset('fashion_mnist', manual_dir=mnist_dir, backend='numpy', validation_size=100)
    assert D.load_dataset('mnist', manual_dir=mnist_dir, backend='numpy', validation_size=100).name == 'mnist'


def test_tfds_preparation_is_one_process_at_a_time(tmp_path):
    """Processes that prepare the same TFDS dataset wait for each other (a fresh machine's parallel tests once
    collided in TFDS's final rename): the second holder enters only after the first has left."""
    import threading  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    events = []

    def prepare(name):
        with tfds_backend.preparation_lock(str(tmp_path / 'mnist' / '3.0.1')):
            events.append(f'{name} in')
            time.sleep(0.3)
            events.append(f'{name} out')

    first = threading.Thread(target=prepare, args=('a',))
    first.start()
    time.sleep(0.1)
    prepare('b')
    first.join()
    assert events == ['a in', 'a out', 'b in', 'b out']
