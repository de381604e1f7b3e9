"""Datasets: ``readers`` (the original files, offline with numpy or through TFDS) and ``datasets`` (whole uint8
arrays in one canonical order, splits, preprocessing). Imports only ``jst.errors``."""
