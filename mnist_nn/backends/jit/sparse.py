"""The images as CSR rows with one-byte value codes: the form the one-hidden-layer kernels read.

About 80% of MNIST's pixels are 0; the first layer skips them, which is exact (those terms add 0 to
z^1 and to the gradient). A sparse copy is made by whoever owns a data set, once, and passed to every
kernel that reads it (see :func:`mnist_nn.Network.sgd`'s ``sparse=``): nothing here remembers arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit


class SparseImages(NamedTuple):
    """Images as CSR rows: image i's non-zero pixels are at columns ``indices[indptr[i]:indptr[i+1]]``
    with values ``table[codes[...]]``.

    Pixel values are stored as one-byte codes into a table of the distinct values when there are at
    most 256 of them (MNIST's are 255 multiples of 1/255): a third of the bytes per pixel to stream
    from memory each epoch (the images are visited in random order, so every image is a cache miss).
    Otherwise ``codes`` is simply 0, 1, 2, ... and ``table`` the values themselves. Exact either way.
    """
    indptr: np.ndarray
    indices: np.ndarray
    codes: np.ndarray
    table: np.ndarray


def sparse_rows(X: np.ndarray, dtype) -> SparseImages:
    """The CSR form of the images ``X`` (N, n_in) with values in ``dtype`` (see SparseImages).

    A copy: later changes to X are not seen by it. Made in Numba (count, fill, code the values), about
    0.2 s for 50,000 MNIST images, which is why a training loop makes it once and hands it to both the
    training kernel and the after-epoch evaluation.
    """
    X = np.ascontiguousarray(X)
    indptr = np.zeros(len(X) + 1, dtype=np.int64)
    _count_nonzero_rows(X, indptr[1:])
    np.cumsum(indptr, out=indptr)
    # Column numbers as uint16 when they fit (MNIST's 784 do): a quarter less memory to stream per epoch.
    index_type = np.uint16 if X.shape[1] <= np.iinfo(np.uint16).max else np.int32
    indices, values = np.empty(indptr[-1], index_type), np.empty(indptr[-1], dtype)
    _fill_rows(X, indptr, indices, values)
    bits_type = np.uint32 if values.dtype.itemsize == 4 else np.uint64
    codes, table_bits = np.empty(len(values), np.uint8), np.zeros(256, bits_type)
    distinct = _value_codes(values.view(bits_type), codes, table_bits)
    if distinct < 0:  # too many distinct values for one-byte codes: index the values directly
        return SparseImages(indptr, indices, np.arange(len(values), dtype=np.uint32 if len(values) < 2**32
                                                       else np.uint64), values)
    return SparseImages(indptr, indices, codes, table_bits[:max(distinct, 1)].view(values.dtype).copy())


def check_sparse(sparse, n_images: int, n_in: int, dtype) -> SparseImages:
    """``sparse`` if it can be the copy of an (n_images, n_in) data set in ``dtype``; ValueError if not.

    Only the shape is checked: that it holds the same pixels as the caller's array is the caller's word."""
    if not isinstance(sparse, SparseImages):
        raise ValueError(f"sparse must come from mnist_nn.backends.jit.sparse_rows, got {type(sparse).__name__}")
    if len(sparse.indptr) != n_images + 1 or sparse.table.dtype != np.dtype(dtype):
        raise ValueError(f"sparse holds {len(sparse.indptr) - 1} images in {sparse.table.dtype}, the data set "
                         f"has {n_images} in {np.dtype(dtype)}: make it with sparse_rows(X, {np.dtype(dtype)})")
    if len(sparse.indices) and int(sparse.indices.max()) >= n_in:
        raise ValueError(f"sparse has pixels past column {n_in - 1}: it is not a copy of this data set")
    return sparse


# nogil: a training loop may prepare its data sets on another thread alongside.

@njit(cache=True, nogil=True)
def _count_nonzero_rows(X, counts):
    for i in range(X.shape[0]):
        c = 0
        for k in range(X.shape[1]):
            if X[i, k] != 0:
                c += 1
        counts[i] = c


@njit(cache=True, nogil=True)
def _fill_rows(X, indptr, indices, values):
    for i in range(X.shape[0]):
        p = indptr[i]
        for k in range(X.shape[1]):
            if X[i, k] != 0:
                indices[p] = k
                values[p] = X[i, k]
                p += 1


@njit(cache=True, nogil=True)
def _value_codes(bits, codes, table_bits):
    """codes[p] with table_bits[codes[p]] == bits[p], for at most len(table_bits) distinct values.

    ``bits`` are the values' bit patterns (so equal means identical). Returns the number of distinct
    values, or -1 if there are more than the table holds. An open-addressing hash of the patterns.
    """
    slots = np.full(4 * table_bits.shape[0], -1, np.int64)  # hash slot -> code; a quarter full at most
    mask = slots.shape[0] - 1
    distinct = 0
    for p in range(bits.shape[0]):
        pattern = bits[p]
        slot = (np.uint64(pattern) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)  # Fibonacci hashing
        slot = np.int64(slot) & mask
        while slots[slot] >= 0 and table_bits[slots[slot]] != pattern:
            slot = (slot + 1) & mask
        if slots[slot] < 0:
            if distinct == table_bits.shape[0]:
                return -1
            table_bits[distinct] = pattern
            slots[slot] = distinct
            distinct += 1
        codes[p] = slots[slot]
    return distinct
