"""Model files: writing them atomically, and reading them with memory bounded by what the model needs.

A model file is a ``.npz`` (a zip of ``.npy`` arrays): ``w0, w1, ...``, ``b0, b1, ...`` and
``metadata``, a JSON string. A file may come from anywhere, so :func:`read` trusts nothing in it:
before any array is read it checks that the path is a regular file, that the zip lists only those
members, that the metadata is small, shallow and sane, that the sizes it declares stay under
:data:`MAX_PARAMETERS`, and that every member's declared size, dtype and shape (read from its ``.npy``
header, never with pickle) are exactly what those sizes need. Only then is each array read, straight
into an array of its final size, and checked to be finite. Every refusal is a :class:`ModelFileError`
naming the file, the problem and what to do.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from mnist_nn.errors import ModelFileError
from mnist_nn.fileio import atomic_write
from mnist_nn.modelmeta import (FIX as _FIX, FORMAT_VERSION, MAX_METADATA_DEPTH, MAX_PARAMETERS, MAX_SIZES,  # noqa: F401
                                MODEL_FORMAT, _check_metadata, _dashed, _depth)
from mnist_nn.settings import N_CLASSES, N_INPUTS

MAX_METADATA_BYTES = 1 << 20  # a genuine model's metadata is about 3 KB
MAX_HEADER_BYTES = 4096  # an .npy header: numpy writes 128 bytes for these arrays
MAX_DIRECTORY_BYTES = 1 << 16  # the zip's table of contents: 64 members of a few dozen bytes
MAX_RATIO = 20  # trained weights barely compress; a member that unpacks 20x is not weights
CHUNK_BYTES = 16 << 20
# The parameters, and the optimizer's state for each (``exp_avg_w0``, ...; see mnist_nn.optimizers).
# Batch norm's arrays (gamma0, running_mean0, ...; see mnist_nn.batchnorm).
_MEMBER = re.compile(r"(metadata|((momentum_buffer|square_avg|exp_avg|exp_avg_sq)_)?(w|b|gamma|beta)(0|[1-9][0-9]?)"
                     r"|running_(mean|var)(0|[1-9][0-9]?))\.npy")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
               RuntimeError, struct.error)


@dataclass
class Model:
    """What a model file holds, checked: the metadata dict and the parameters in the metadata's dtype."""

    metadata: dict
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    extra: dict = None  # batch norm's and the optimizer's arrays by member name (gamma0, exp_avg_w0, ...)


# --------------------------------------------------------------------------- writing

def write(path, metadata: dict, weights, biases, extra: dict | None = None) -> Path:
    """Write a model file atomically (a temporary file renamed into place), in the format :func:`read`
    reads and every earlier mnist_nn read: ``np.savez`` of the arrays and the metadata as a JSON string."""
    path = Path(path)
    text = json.dumps(metadata)
    if len(text) * 4 > MAX_METADATA_BYTES:  # stored as UTF-32, as numpy stores a str
        raise ModelFileError(f"{path}: the model's metadata is {len(text):,} characters, more than a model file "
                             f"may hold ({MAX_METADATA_BYTES // 4:,}); keep network.metadata small")
    arrays = {f"w{l}": w for l, w in enumerate(weights)}
    arrays.update({f"b{l}": b for l, b in enumerate(biases)})
    arrays.update(extra or {})
    arrays["metadata"] = np.array(text)
    with atomic_write(path) as (f, _):
        np.savez(f, **arrays)
    return path


# --------------------------------------------------------------------------- reading

def read(path) -> Model:
    """Read and check the model file ``path`` (or the ``model.npz`` in the run folder ``path``).

    Raises :class:`ModelFileError` on anything a genuine mnist_nn model would not be.
    """
    path = Path(path)
    try:
        if path.is_dir():
            path = path / "model.npz"
    except OSError:  # a name too long, a folder that cannot be searched: _open_regular names the problem
        pass
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        _check_kind(f, path)
        _check_directory(f, size, path)
        try:
            with zipfile.ZipFile(f) as zf:
                members = _members(zf, path)
                meta = _read_metadata(zf, members, path)
                sizes = meta["sizes"]
                dtype = np.dtype(meta["dtype"])
                shapes = {}
                for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                    shapes[f"w{l}"], shapes[f"b{l}"] = (n_out, n_in), (n_out,)
                if meta.get("batch_norm"):
                    for l, n_out in enumerate(sizes[1:-1]):
                        shapes[f"gamma{l}"] = shapes[f"beta{l}"] = (n_out,)
                parameters = dict(shapes)
                if meta.get("batch_norm"):
                    for l, n_out in enumerate(sizes[1:-1]):
                        shapes[f"running_mean{l}"] = shapes[f"running_var{l}"] = (n_out,)
                for slot in meta.get("optimizer", {}).get("slots", []):  # checked by modelmeta
                    shapes.update({f"{slot}_{name}": shape for name, shape in parameters.items()})
                unexpected = sorted(set(members) - set(shapes) - {"metadata"})
                if unexpected:
                    raise ModelFileError(f"{path}: holds arrays {', '.join(unexpected)} that a model of sizes "
                                         f"{_dashed(sizes)} does not have; {_FIX}")
                for name, shape in shapes.items():
                    if name not in members:
                        raise ModelFileError(f"{path}: array {name} is missing; the metadata's sizes "
                                             f"{_dashed(sizes)} need it {shape}; {_FIX}")
                    _check_member_size(members[name], shape, path)
                arrays = {name: _read_array(zf, members[name], shape, dtype, path) for name, shape in shapes.items()}
        except ModelFileError:
            raise
        except _ZIP_ERRORS as exc:
            raise ModelFileError(f"{path}: the model file is damaged ({exc}); {_FIX}") from None
    n = len(sizes) - 1
    return Model(meta, [arrays[f"w{l}"] for l in range(n)], [arrays[f"b{l}"] for l in range(n)],
                 {name: array for name, array in arrays.items() if not re.fullmatch(r"[wb][0-9]+", name)})


def check_model_fits(net, source, n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES, what: str = "MNIST") -> None:
    """Refuse (:class:`ModelFileError`, naming ``source``, the model's file) a network whose input or output
    layer does not fit data of ``n_inputs`` pixels per image and ``n_classes`` classes."""
    if net.sizes[0] != n_inputs:
        raise ModelFileError(f"{source}: the model takes {net.sizes[0]} inputs, but an {what} image has {n_inputs} "
                             f"pixels (28x28); give a model trained on {what}")
    if net.sizes[-1] != n_classes:
        raise ModelFileError(f"{source}: the model has {net.sizes[-1]} outputs, but {what} has {n_classes} digits; "
                             f"give a model trained on {what}")


def _open_regular(path: Path):
    """``path`` opened for reading if it is a regular file; never blocks on a FIFO, never reads a device."""
    try:
        _check_regular(os.stat(path), path)
        # O_NONBLOCK: if the name was swapped for a FIFO since the stat, opening it still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file; {_FIX}") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: the model file cannot be read ({exc.strerror or exc})") from None
    try:
        _check_regular(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(info: os.stat_result, path: Path) -> None:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
    raise ModelFileError(f"{path}: is {kind}, not a model file; {_FIX}")


def _check_kind(f, path: Path) -> None:
    """Name what a file that is not a zip is, so no other tool's advice (numpy's allow_pickle) shows."""
    start = f.read(6)
    f.seek(0)
    if start.startswith(b"PK"):
        return
    if start == b"\x93NUMPY":
        what = "a single NumPy array (.npy), not an mnist_nn model (.npz, a zip of arrays and metadata)"
    elif start[:1] == b"\x80":
        what = "a Python pickle; mnist_nn never loads pickles, which can run code"
    elif not start:
        what = "empty"
    else:
        what = "not an mnist_nn model (.npz) file: it is not a zip archive"
    raise ModelFileError(f"{path}: is {what}; {_FIX}")


def _check_directory(f, size: int, path: Path) -> None:
    """Refuse a zip whose table of contents is larger than a model's, before zipfile reads it all into
    objects. It is found as zipfile finds it: the end record last in the file or the last one in its
    final 64 KiB, and the zip64 record right before it when one is there."""
    tail_start = max(size - (1 << 16) - 22, 0)
    f.seek(tail_start)
    tail = f.read()
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise ModelFileError(f"{path}: is not an mnist_nn model (.npz) file: not a whole zip archive "
                             f"(truncated?); {_FIX}")
    members, directory = struct.unpack_from("<HL", tail, at + 10)
    end = tail_start + at
    if end >= 76:
        f.seek(end - 20)
        if f.read(4) == b"PK\x06\x07":
            f.seek(end - 76)
            record = f.read(56)
            if record[:4] == b"PK\x06\x06":
                members, directory = struct.unpack_from("<QQ", record, 32)
    f.seek(0)
    # Each layer's weights, biases, gamma and beta, with an optimizer state of up to two slots for each,
    # and the running statistics.
    if members > 14 * MAX_SIZES or directory > MAX_DIRECTORY_BYTES:
        raise ModelFileError(f"{path}: its zip lists {members:,} members in {directory:,} bytes; a model has at "
                             f"most {14 * MAX_SIZES} in {MAX_DIRECTORY_BYTES:,}; {_FIX}")


def _members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    members = {}
    for info in zf.infolist():
        name = info.filename
        if not _MEMBER.fullmatch(name):
            raise ModelFileError(f"{path}: holds {name!r}, which is not part of an mnist_nn model; {_FIX}")
        if name[:-4] in members:
            raise ModelFileError(f"{path}: holds {name} twice; {_FIX}")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{path}: {name} is encrypted; {_FIX}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{path}: {name} is compressed with zip method {info.compress_type}, which "
                                 f"numpy never writes; {_FIX}")
        members[name[:-4]] = info
    return members


def _read_metadata(zf: zipfile.ZipFile, members: dict, path: Path) -> dict:
    info = members.get("metadata")
    if info is None:
        raise ModelFileError(f"{path}: not an mnist_nn model (no mnist_nn metadata); {_FIX}")
    if info.file_size > MAX_METADATA_BYTES + MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: its metadata is {info.file_size:,} bytes; a model's is a few KB and "
                             f"at most {MAX_METADATA_BYTES:,} are read; {_FIX}")
    with zf.open(info) as member:
        data = member.read(MAX_METADATA_BYTES + MAX_HEADER_BYTES + 1)
    stream = io.BytesIO(data)
    shape, fortran, dtype = _header(stream, "metadata", path)
    text = None
    if shape == () and dtype.kind == "U" and len(data) - stream.tell() == dtype.itemsize:
        try:
            text = np.frombuffer(data, dtype, count=1, offset=stream.tell())[0]
        except (ValueError, UnicodeDecodeError):
            pass
    if not isinstance(text, str):
        raise ModelFileError(f"{path}: not an mnist_nn model (its metadata is {dtype} {shape}, not a string); {_FIX}")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not an mnist_nn model (no mnist_nn metadata); {_FIX}")
    if _depth(meta) > MAX_METADATA_DEPTH:
        raise ModelFileError(f"{path}: its metadata nests more than {MAX_METADATA_DEPTH} deep; a model's nests 4; {_FIX}")
    return _check_metadata(meta, path)


def _header(stream, name: str, path: Path):
    """``(shape, fortran_order, dtype)`` from the .npy header at the start of ``stream`` (bounded bytes)."""
    try:
        version = npy.read_magic(stream)
        readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"npy format version {version}, which numpy writes only for unusual dtypes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's note on Python 2 headers
            return readers[version](stream, max_header_size=MAX_HEADER_BYTES)
    except (ValueError, TypeError, SyntaxError, RecursionError, KeyError, OverflowError, MemoryError) as exc:
        reason = str(exc).split("\n")[0][:200]
        raise ModelFileError(f"{path}: array {name} has a broken .npy header ({reason}); {_FIX}") from None


def _check_member_size(info: zipfile.ZipInfo, shape: tuple, path: Path) -> None:
    """Before opening a member: its declared sizes must be what ``shape`` needs, and it must not be a
    small stream that unpacks to far more (no array read can then cost more than the model needs)."""
    name = info.filename[:-4]
    most = math.prod(shape) * 8 + MAX_HEADER_BYTES
    if info.file_size > most:
        raise ModelFileError(f"{path}: array {name} declares {info.file_size:,} bytes, but the metadata's shape "
                             f"{shape} needs at most {most:,}; {_FIX}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ModelFileError(f"{path}: array {name} is stored but declares {info.compress_size:,} bytes "
                             f"stored for {info.file_size:,}; {_FIX}")
    if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * info.compress_size:
        raise ModelFileError(f"{path}: array {name} unpacks {info.compress_size:,} bytes into {info.file_size:,}; "
                             f"weights do not compress {MAX_RATIO}-fold, so this is not a trained model; {_FIX}")


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple, dtype: np.dtype, path: Path) -> np.ndarray:
    """The member as a C-ordered array of ``dtype``, read straight into place after its header is checked."""
    name = info.filename[:-4]
    with zf.open(info) as member:
        stream = io.BytesIO(member.read(min(MAX_HEADER_BYTES, info.file_size)))
        found, fortran, stored = _header(stream, name, path)
        if stored.kind != "f" or stored.itemsize not in (2, 4, 8):
            raise ModelFileError(f"{path}: array {name} holds {stored} values, not floating-point weights; {_FIX}")
        if found != shape:
            raise ModelFileError(f"{path}: array {name} is {found}, the metadata's sizes need {shape}; {_FIX}")
        if info.file_size != stream.tell() + math.prod(shape) * stored.itemsize:
            raise ModelFileError(f"{path}: array {name} declares {info.file_size:,} bytes, not the "
                                 f"{stream.tell() + math.prod(shape) * stored.itemsize:,} its header says; {_FIX}")
        array = np.empty(shape[::-1] if fortran else shape, stored)
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        done = stream.readinto(buffer)
        while done < len(buffer):
            n = member.readinto(buffer[done:done + CHUNK_BYTES])
            if not n:
                raise ModelFileError(f"{path}: array {name} is truncated; {_FIX}")
            done += n
        member.read(1)  # the end of the member: zipfile checks its CRC here
    if fortran:
        array = array.T
    if not np.isfinite(array).all():
        raise ModelFileError(f"{path}: array {name} holds NaN or infinite values (the training diverged); "
                             f"use an earlier checkpoint such as best.npz, or train again")
    return np.ascontiguousarray(array, dtype=dtype)
