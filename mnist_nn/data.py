"""MNIST data: fetch the four IDX files, verify them, cache them, parse them.

Each ``.gz`` is downloaded to a temporary folder inside the cache folder, unpacked into a temporary
file, and that file is renamed into place only once the SHA-256 of the *uncompressed* content
matches the canonical table below: every mirror's gzip packaging is accepted and the cache never
holds a partial or corrupt file. The cache keeps the raw IDX files (55 MB), so a load is a read,
not a gunzip. A small ``.verified`` stamp beside each file records the check, so a second load
does not hash 55 MB again.

Command line::

    python -m mnist_nn.data download [--data-dir D] [--mirror URL] [--force] [--quiet]
    python -m mnist_nn.data info [--data-dir D]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np

from mnist_nn.cli import ArgumentParser, finish
from mnist_nn.fileio import atomic_write, write_text

# Canonical SHA-256 and size of the *uncompressed* IDX content (the widely published MNIST).
CHECKSUMS = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
}
FILE_NAMES = tuple(CHECKSUMS)

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# (connect, read) seconds: a dead mirror should cost seconds, not minutes.
TIMEOUT = (5.0, 20.0)
RETRIES = 2
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
TRAIN_SIZE = 60_000
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


class MnistError(Exception):
    """Base class of every data error a user can act on (the CLIs print it as one line)."""


class MnistFormatError(MnistError, ValueError):
    """An IDX file is broken: truncated, not IDX at all, wrong magic, wrong dimensions..."""


class MnistDownloadError(MnistError):
    """A file could not be had: every mirror failed, or offline mode and it is not cached."""


class Split(NamedTuple):
    images: np.ndarray  # (N, 784), scaled to [0, 1]
    labels: np.ndarray  # (N,), uint8 digits 0-9


class MnistData(NamedTuple):
    train: Split
    validation: Split  # empty (0 rows) when validation_size=0
    test: Split


# --------------------------------------------------------------------------- locations and settings

def data_dir_path(data_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``data_dir`` > ``$MNIST_NN_DATA`` > ``$XDG_CACHE_HOME/mnist_nn`` > ``~/.cache/mnist_nn``."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("MNIST_NN_DATA"):
        return Path(os.environ["MNIST_NN_DATA"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "mnist_nn"


def mirror_list(mirrors: str | list[str] | tuple[str, ...] | None = None, defaults: bool = True) -> list[str]:
    """Mirrors in the order they are tried: the given ones, then ``$MNIST_NN_MIRROR``, then the defaults.

    Each source may hold several URLs separated by commas.
    """
    given = [mirrors] if isinstance(mirrors, str) else list(mirrors or [])
    given.append(os.environ.get("MNIST_NN_MIRROR", ""))
    urls = [u.strip() for text in given for u in text.split(",") if u.strip()]
    if defaults:
        urls += DEFAULT_MIRRORS
    result: list[str] = []
    for url in urls:
        if urlparse(url).scheme not in ("http", "https", "file"):
            raise MnistDownloadError(f"mirror {url!r} is not an http://, https:// or file:// URL; fix --mirror or MNIST_NN_MIRROR")
        url = url if url.endswith("/") else url + "/"
        if url not in result:
            result.append(url)
    return result


def offline_requested(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("MNIST_NN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- verification

def _open_idx(path: Path):
    """Open an IDX file whether it is gzip-compressed or raw (judged by its first bytes)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def content_sha256(path: Path, sink=None) -> tuple[str, int]:
    """SHA-256 and length of the uncompressed content of ``path``, also written to ``sink`` if given."""
    digest, size = hashlib.sha256(), 0
    try:
        with _open_idx(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise MnistFormatError(f"{path}: not a readable gzip file ({exc})") from None
    return digest.hexdigest(), size


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _file_signature(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(path: Path, expected_sha256: str) -> bool:
    """True when the uncompressed content of ``path`` has the expected hash.

    The result is remembered in a stamp file keyed on size and modification time, so a file
    is hashed once, not at every load.
    """
    stamp = _stamp_path(path)
    signature = _file_signature(path)
    try:
        record = json.loads(stamp.read_text())
        if record == {**signature, "sha256": expected_sha256}:
            return True
    except (OSError, ValueError):
        pass
    try:
        sha, _ = content_sha256(path)
    except MnistFormatError:
        return False
    if sha != expected_sha256:
        return False
    write_text(stamp, json.dumps({**signature, "sha256": sha}))
    return True


# --------------------------------------------------------------------------- download

def _session():
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    from mnist_nn import __version__

    retry = Retry(total=RETRIES, connect=RETRIES, read=RETRIES, status=RETRIES, backoff_factor=0.3,
                  status_forcelist=(500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
                  raise_on_status=False)
    session = requests.Session()
    session.headers["User-Agent"] = f"mnist_nn/{__version__} (+python-requests)"
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _fetch_url(url: str, dest, session, timeout, quiet: bool, label: str) -> None:
    """Stream ``url`` into the open binary file ``dest`` (HTTP(S) or file://)."""
    if urlparse(url).scheme == "file":
        with open(url2pathname(urlparse(url).path), "rb") as src:
            shutil.copyfileobj(src, dest, _CHUNK)
        return
    from tqdm.auto import tqdm

    with session.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False,
                  disable=quiet or not sys.stderr.isatty()) as bar:
            for chunk in response.iter_content(_CHUNK):
                dest.write(chunk)
                bar.update(len(chunk))


def _describe_failure(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, (requests.Timeout, requests.exceptions.ReadTimeout)):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({type(exc.__context__ or exc).__name__})"
    return str(exc) or type(exc).__name__


def _download_one(name: str, folder: Path, mirrors: list[str], checksums: dict, session, timeout,
                  quiet: bool) -> Path:
    """Try each mirror in turn until one gives a file whose content verifies."""
    import requests
    import urllib3

    expected_sha, _ = checksums[name]
    final = folder / name  # cached uncompressed: a load then costs a read, not a gunzip
    failures = []
    for mirror in mirrors:
        url = mirror + f"{name}.gz"
        try:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
                packed = Path(scratch) / f"{name}.gz"
                with open(packed, "wb") as dest:
                    _fetch_url(url, dest, session, timeout, quiet, f"{name}.gz")
                with atomic_write(final) as (dest, _):
                    sha, size = content_sha256(packed, sink=dest)
                    if sha != expected_sha:
                        raise MnistFormatError(f"checksum mismatch ({size} bytes uncompressed, sha256 {sha[:12]}...)")
            write_text(_stamp_path(final), json.dumps({**_file_signature(final), "sha256": sha}))
            return final
        except (OSError, requests.RequestException, urllib3.exceptions.HTTPError, MnistFormatError) as exc:
            reason = _describe_failure(exc) if not isinstance(exc, MnistFormatError) else str(exc).split(": ", 1)[-1]
            failures.append(f"{mirror} ({reason})")
    raise MnistDownloadError(f"could not download {name}.gz from any mirror: " + "; ".join(failures)
                             + ". Check your connection, or pass a working --mirror / MNIST_NN_MIRROR")


def cached_path(name: str, folder: Path) -> Path | None:
    """The cached file for ``name``: raw IDX as downloads leave it, or gzip as a user may place it."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _remove_stale_parts(folder: Path, age_s: float = 3600.0) -> None:
    """Temporary files left by a killed download are never used; clear the old ones."""
    now = time.time()
    for part in [*folder.glob(".*.part"), *folder.glob(".download-*")]:
        try:
            if now - part.stat().st_mtime > age_s:
                shutil.rmtree(part) if part.is_dir() else part.unlink()
        except OSError:
            pass


def fetch(data_dir=None, mirrors=None, *, force: bool = False, quiet: bool = False,
             offline: bool | None = None, checksums: dict | None = None, timeout=TIMEOUT,
             use_default_mirrors: bool = True) -> dict[str, Path]:
    """Make sure the four verified IDX files are in the cache folder; return their paths by name.

    Files already there and verified are not downloaded again (unless ``force``). In offline mode
    (``offline=True`` or ``MNIST_NN_OFFLINE=1``) the network is never touched.
    ``checksums`` maps each file name to ``(sha256, size)`` of its uncompressed content; tests pass
    their own table, the default is the canonical one.
    """
    checksums = checksums or CHECKSUMS
    folder = data_dir_path(data_dir)
    offline = offline_requested(offline)
    paths: dict[str, Path] = {}
    missing = []
    for name in checksums:
        path = cached_path(name, folder)
        if path is not None and not force:
            if is_verified(path, checksums[name][0]):
                paths[name] = path
                continue
            if offline:
                raise MnistDownloadError(f"{path} is corrupt (checksum mismatch); delete it and download again, "
                                         "or replace it with a good copy")
        missing.append(name)
    if not missing:
        return paths
    if offline:
        raise MnistDownloadError(f"offline mode and {', '.join(missing)} (raw or .gz) not in {folder}; "
                                 "put the files there or drop --offline / MNIST_NN_OFFLINE")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistDownloadError(f"cannot create the data folder {folder} ({exc.strerror}); "
                                 "choose another with --data-dir or MNIST_NN_DATA") from None
    _remove_stale_parts(folder)
    urls = mirror_list(mirrors, defaults=use_default_mirrors)
    if not urls:
        raise MnistDownloadError("no mirror to download from; pass --mirror URL or set MNIST_NN_MIRROR")
    with _session() as session:
        for name in missing:
            stale = cached_path(name, folder)
            paths[name] = _download_one(name, folder, urls, checksums, session, timeout, quiet)
            if stale is not None and stale != paths[name]:
                stale.unlink(missing_ok=True)  # a corrupt copy the verified file now replaces
                _stamp_path(stale).unlink(missing_ok=True)
    return paths


# --------------------------------------------------------------------------- parsing

def _read_bytes(path: Path) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MnistFormatError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistFormatError(f"{path}: gzip data is truncated or corrupt ({exc})") from None


def parse_idx(path: str | os.PathLike, kind: str) -> np.ndarray:
    """Parse an IDX file (gzip or raw): ``kind="images"`` -> uint8 (N, 28, 28), ``"labels"`` -> uint8 (N,).

    Every defect raises :class:`MnistFormatError` naming the file and the problem.
    """
    path = Path(path)
    data = _read_bytes(path)
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


# --------------------------------------------------------------------------- command line

def _info(folder: Path) -> int:
    print(f"cache folder: {folder}{'' if folder.is_dir() else '  (does not exist yet)'}")
    complete = True
    for name, (sha, _) in CHECKSUMS.items():
        path = cached_path(name, folder)
        if path is None:
            state, complete = "missing", False
        elif is_verified(path, sha):
            state = f"verified  {path.stat().st_size / 1e6:7.2f} MB"
        else:
            state, complete = "CORRUPT (checksum mismatch; run download --force)", False
        print(f"  {name:26s} {state}")
    print("all four files present and verified" if complete else "run `python -m mnist_nn.data download` to fetch the rest")
    return 0


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mnist_nn.data",
                                     description="Download, verify and inspect the cached MNIST files.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="cache folder (default: $MNIST_NN_DATA, else $XDG_CACHE_HOME/mnist_nn, "
                                           "else ~/.cache/mnist_nn)")
    dl = sub.add_parser("download", parents=[common], help="fetch and verify the four IDX files",
                        description="Fetch the four MNIST files into the cache folder and verify their SHA-256.")
    dl.add_argument("--mirror", action="append", help="mirror URL tried first (http, https or file://; "
                                                      "repeat or separate by commas); also $MNIST_NN_MIRROR")
    dl.add_argument("--force", action="store_true", help="download again even if verified files are cached")
    dl.add_argument("--quiet", action="store_true", help="no progress bars")
    dl.add_argument("--offline", action="store_true", default=None,
                    help="never touch the network, only check the cache (also MNIST_NN_OFFLINE=1)")
    sub.add_parser("info", parents=[common], help="show the cache folder and which files are there and verified",
                   description="Show the cache folder and the state of each file.")
    args = parser.parse_args(argv)
    folder = data_dir_path(args.data_dir)
    try:
        if args.command == "info":
            return _info(folder)
        started = time.perf_counter()
        paths = fetch(folder, args.mirror, force=args.force, quiet=args.quiet, offline=args.offline)
        seconds = time.perf_counter() - started
        if not args.quiet:
            for path in paths.values():
                print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  verified")
            print(f"done in {seconds:.1f} s")
        return 0
    except MnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    finish(main())
