"""The IDX format MNIST comes in: a magic number, the dimensions as big-endian uint32, the bytes.

Parsing is bounded: a file (raw or gzip) is read only up to the size the largest genuine MNIST file
of its kind has, so a gzip bomb or an endless file is refused after at most that many bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np

from mnist_nn.data.cache import CHECKSUMS, GZIP_MAGIC, compressed_limit, open_regular
from mnist_nn.errors import MnistFormatError

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def _largest(kind: str) -> int:
    return max(size for name, (_, size) in CHECKSUMS.items() if ("images" in name) == (kind == "images"))


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        with open_regular(path) as f:
            if os.fstat(f.fileno()).st_size > compressed_limit(limit):
                raise MnistFormatError(f"{path}: larger than an IDX file of this kind can be ({limit} bytes)")
            raw = f.read()
    except OSError as exc:
        raise MnistFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] != GZIP_MAGIC:
        data = raw
    else:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                data = f.read(limit + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise MnistFormatError(f"{path}: gzip data is truncated or corrupt ({exc})") from None
    if len(data) > limit:
        raise MnistFormatError(f"{path}: unpacks to more than {limit} bytes, more than an IDX file of this kind has")
    return data


def parse_idx(path: str | os.PathLike, kind: str, max_bytes: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip or raw): ``kind="images"`` -> uint8 (N, 28, 28), ``"labels"`` -> uint8 (N,).

    At most ``max_bytes`` of content are read (default: the size of the largest MNIST file of that
    kind, 47,040,016 bytes for images, 60,008 for labels). Every defect raises
    :class:`MnistFormatError` naming the file and the problem.
    """
    path = Path(path)
    data = _read_bytes(path, max_bytes or _largest(kind))
    magic, ndim = (IMAGE_MAGIC, 3) if kind == "images" else (LABEL_MAGIC, 1)
    header = 4 + 4 * ndim
    if not data:
        raise MnistFormatError(f"{path}: file is empty")
    if data.lstrip()[:1] == b"<":
        raise MnistFormatError(f"{path}: holds an HTML page, not IDX data (a mirror's error page?); delete it")
    if len(data) < header:
        raise MnistFormatError(f"{path}: truncated header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise MnistFormatError(f"{path}: wrong magic number {found}, expected {magic} for {kind}")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    if kind == "images" and tuple(dims[1:]) != (28, 28):
        raise MnistFormatError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise MnistFormatError(f"{path}: {what}: {len(data)} bytes, the header promises {expected}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(tuple(dims))
    if kind == "labels" and array.size and array.max() > 9:
        raise MnistFormatError(f"{path}: label {array.max()} out of range 0-9")
    return array
