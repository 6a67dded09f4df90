"""MNIST data: fetch the four IDX files, verify them, cache them, parse them.

The pieces: :mod:`~mnist_nn.data.cache` (where the cache is, what a genuine file is, the
``.verified`` stamps, bounded reads), :mod:`~mnist_nn.data.download` (mirrors, limits, the atomic
download), :mod:`~mnist_nn.data.idx` (the IDX format), and here :func:`load_mnist`, which puts them
together. The cache keeps the raw IDX files (55 MB), so a load is a read, not a gunzip; a small
``.verified`` stamp beside each file records the check, so a second load does not hash 55 MB again.

Command line (:mod:`mnist_nn.data.__main__`)::

    python -m mnist_nn.data download [--data-dir D] [--mirror URL] [--force] [--quiet] [--offline]
    python -m mnist_nn.data info [--data-dir D]
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_nn.data.cache import (CHECKSUMS, FILE_NAMES, cached_path, content_sha256, data_dir_path,
                                 is_verified)
from mnist_nn.data.download import (DEFAULT_MIRRORS, RETRIES, TIMEOUT, _session, fetch, mirror_list,  # noqa: F401
                                    offline_requested)
from mnist_nn.data.idx import IMAGE_MAGIC, LABEL_MAGIC, parse_idx
from mnist_nn.errors import MnistDownloadError, MnistError, MnistFormatError

__all__ = ["CHECKSUMS", "DEFAULT_MIRRORS", "FILE_NAMES", "IMAGE_MAGIC", "LABEL_MAGIC", "RETRIES", "TIMEOUT",
           "TRAIN_SIZE", "MnistData", "MnistDownloadError", "MnistError", "MnistFormatError", "Split",
           "cached_path", "content_sha256", "data_dir_path", "fetch", "is_verified", "load_mnist",
           "mirror_list", "offline_requested", "parse_idx"]

TRAIN_SIZE = 60_000


class Split(NamedTuple):
    images: np.ndarray  # (N, 784), scaled to [0, 1]
    labels: np.ndarray  # (N,), uint8 digits 0-9


class MnistData(NamedTuple):
    train: Split
    validation: Split  # empty (0 rows) when validation_size=0
    test: Split


def _images_and_labels(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = parse_idx(image_path, "images"), parse_idx(label_path, "labels")
    if len(images) != len(labels):
        raise MnistFormatError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    return images.reshape(len(images), -1), labels


def load_mnist(data_dir=None, validation_size: int = 10_000, dtype=np.float32, download: bool = True, *,
               mirrors=None, quiet: bool = False, offline: bool | None = None) -> MnistData:
    """Load MNIST as training, validation and test splits, downloading it on first use.

    Images are ``(N, 784)`` arrays of ``dtype`` scaled to [0, 1]; labels are ``uint8``.
    The validation split is the last ``validation_size`` of the 60,000 training images (the classic
    50k/10k split); ``validation_size=0`` trains on all 60,000. ``download=False`` never touches the
    network (same as ``offline=True``).
    """
    if not 0 <= validation_size < TRAIN_SIZE:
        raise ValueError(f"validation_size must be between 0 and {TRAIN_SIZE - 1}, got {validation_size}")
    paths = fetch(data_dir, mirrors, quiet=quiet, offline=True if not download else offline)
    train_x, train_y = _images_and_labels(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    test_x, test_y = _images_and_labels(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])

    def scaled(pixels: np.ndarray) -> np.ndarray:
        # One pass, no temporary; the divisor in the target dtype keeps NumPy on its fast loop.
        return np.divide(pixels, np.dtype(dtype).type(255), out=np.empty(pixels.shape, dtype), dtype=dtype)

    if validation_size >= len(train_x):
        raise ValueError(f"validation_size {validation_size} leaves no training images (there are {len(train_x)})")
    cut = len(train_x) - validation_size
    return MnistData(train=Split(scaled(train_x[:cut]), train_y[:cut].copy()),
                     validation=Split(scaled(train_x[cut:]), train_y[cut:].copy()),
                     test=Split(scaled(test_x), test_y.copy()))
