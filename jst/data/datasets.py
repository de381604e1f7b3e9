"""Datasets as whole uint8 arrays in one canonical order: MNIST, Fashion-MNIST, CIFAR-10.

``load_dataset`` reads the original files (``jst.data.readers``: TFDS or numpy,
identical arrays), puts each split in one *canonical order* (sorted by a hash
of label and pixels: TFDS stores examples shuffled) and carves the validation
split from the training split by a fixed permutation (``split_seed``), so
every method and seed sees the same train/val/test data. ``preprocess`` is the
one uint8 -> float32 transform (numpy or jax).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Optional

import numpy as np
from absl import logging

from jst.data import readers
from jst.data import tfds_backend
from jst.data.readers import DataError, Split  # re-exported: the types this module returns

SUPPORTED_DATASETS = readers.SUPPORTED_DATASETS


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits plus how they were read."""

    name: str
    train: Split
    validation: Split
    test: Split
    num_classes: int
    backend: str
    permuted_pixels: bool = False  # the permuted-pixel variant (``permute_pixels``): a field, never part of ``name``


def resolve_manual_dir(manual_dir: Optional[str]) -> Optional[str]:
    """``manual_dir`` from the config, else the ``JST_MANUAL_DIR`` environment variable."""
    return manual_dir or os.environ.get(readers.MANUAL_DIR_ENV) or None


# --------------------------------------------------------------------------
# Canonical order, splitting, preprocessing
# --------------------------------------------------------------------------
def canonical_order(split: Split) -> np.ndarray:
    """Permutation sorting examples by SHA-1 of (label, pixels): reader-independent."""
    keys = [hashlib.sha1(bytes([int(l) & 0xFF]) + img.tobytes()).digest()
            for img, l in zip(split.images, split.labels)]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), np.int64)


def canonicalize(split: Split) -> Split:
    order = canonical_order(split)
    return Split(split.images[order], split.labels[order])


def split_validation(train: Split, validation_size: int, split_seed: int) -> tuple[Split, Split]:
    """Carves ``validation_size`` examples out of ``train`` by a fixed permutation."""
    if not 0 <= validation_size < len(train):
        raise DataError(f'validation_size={validation_size} must be in [0, {len(train)}).')
    perm = np.random.default_rng(split_seed).permutation(len(train))
    val_idx, train_idx = np.sort(perm[:validation_size]), np.sort(perm[validation_size:])
    return (Split(train.images[train_idx], train.labels[train_idx]),
            Split(train.images[val_idx], train.labels[val_idx]))


def load_dataset(name: str,
                 manual_dir: Optional[str] = None,
                 data_dir: Optional[str] = None,
                 backend: str = 'auto',
                 validation_size: int = 5000,
                 split_seed: int = 0,
                 train_limit: Optional[int] = None) -> Dataset:
    """Loads ``name`` as uint8 numpy splits in canonical order.

    ``train_limit`` keeps only the first N training examples (after the
    validation split), for quick runs.
    """
    if name not in SUPPORTED_DATASETS:
        raise DataError(f'Unknown dataset {name!r}; choose one of {SUPPORTED_DATASETS}.')
    manual_dir = resolve_manual_dir(manual_dir)
    if manual_dir and not os.path.isdir(manual_dir):
        raise DataError(readers.missing_files_message(name, manual_dir) + ' (the folder does not exist)')
    if manual_dir and not os.access(manual_dir, os.R_OK | os.X_OK):
        raise DataError(f'manual_dir={manual_dir!r} cannot be read: permission denied. Make the folder readable '
                        '(chmod a+rx) or copy it somewhere readable.')
    tfds_backend.check_dataset_files(name, manual_dir)
    chosen, reason = tfds_backend.choose_backend(name, backend, manual_dir)
    logging.info('Dataset %s: %s reader (%s).', name, chosen, reason)
    if chosen == 'tfds':
        train, test = tfds_backend.read_tfds(name, manual_dir, data_dir)
    else:
        train, test = readers.read_numpy(name, manual_dir)
    train, test = canonicalize(train), canonicalize(test)
    train, validation = split_validation(train, validation_size, split_seed)
    if train_limit:
        train = Split(train.images[:train_limit], train.labels[:train_limit])
    classes = readers.dataset_info(name).num_classes
    top = max(int(s.labels.max(initial=0)) for s in (train, validation, test))
    if top >= classes:  # a head narrower than the labels gives a NaN loss: say why here
        raise DataError(f'{name}: label {top} in the files, but readers.DATASETS[{name!r}].num_classes={classes}.')
    return Dataset(name, train, validation, test, num_classes=classes, backend=chosen)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def fingerprint(ds: Dataset) -> dict[str, Any]:
    """The data's identity: a digest of each split's images and labels, their sizes, and ``split`` (a digest of
    the validation labels in canonical order, which a pixel permutation and ``train_limit`` keep: which examples
    validate)."""
    return {'dataset': ds.name, 'sizes': [len(ds.train), len(ds.validation), len(ds.test)],
            'train': _digest(ds.train.images, ds.train.labels),
            'validation': _digest(ds.validation.images, ds.validation.labels),
            'test': _digest(ds.test.images, ds.test.labels),
            'split': _digest(ds.validation.labels)}


def preprocess(images: Any, dataset: str) -> Any:
    """uint8 images [N, H, W, C] -> float32 model inputs: in [0, 1], standardised per channel where the dataset has
    ``channel_stats`` (CIFAR-10). The one definition, for numpy arrays and for jax arrays under ``jit``."""
    x = images.astype(np.float32) / 255.0
    stats = readers.dataset_info(dataset).channel_stats
    if stats:
        x = (x - np.array(stats[0], np.float32)) / np.array(stats[1], np.float32)
    return x


def permute_pixels(images: np.ndarray, seed: int) -> np.ndarray:
    """Applies one fixed pixel permutation (from ``seed``) to every image."""
    n, h, w, c = images.shape
    perm = np.random.default_rng(seed).permutation(h * w)
    return images.reshape(n, h * w, c)[:, perm].reshape(n, h, w, c)
