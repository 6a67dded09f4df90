"""The cache folder: where it is, what a genuine file is, the ``.verified`` stamps, temporaries.

Every read here is bounded by what a genuine file needs (its size is in :data:`CHECKSUMS`), and only
regular files are opened: a FIFO, a device or a symlink to ``/dev/zero`` is refused, never read.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

from mnist_nn.errors import MnistError, MnistFormatError
from mnist_nn.fileio import write_text

# Canonical SHA-256 and size of the *uncompressed* IDX content (the widely published MNIST).
CHECKSUMS = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
}
FILE_NAMES = tuple(CHECKSUMS)
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
STAMP_LIMIT = 4096  # a stamp is ~130 bytes of JSON
TEMPORARY_PREFIX = ".download-"


def data_dir_path(data_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``data_dir`` > ``$MNIST_NN_DATA`` > ``$XDG_CACHE_HOME/mnist_nn`` > ``~/.cache/mnist_nn``."""
    # Not platformdirs: it would be one more dependency for four lines, and it would move the cache
    # on macOS (~/Library/Caches) and Windows (%LOCALAPPDATA%) away from where the README and
    # existing users' caches put it. The XDG rule below is the one the README documents.
    for source, value in (("--data-dir", data_dir), ("MNIST_NN_DATA", os.environ.get("MNIST_NN_DATA"))):
        if value:
            return _expanded(Path(value), source)
    cache_home = os.environ.get("XDG_CACHE_HOME")
    if cache_home:
        return _expanded(Path(cache_home), "XDG_CACHE_HOME") / "mnist_nn"
    return _expanded(Path("~/.cache"), "the home folder") / "mnist_nn"


def _expanded(path: Path, source: str) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # "~nosuchuser/x", or no home folder at all
        raise MnistError(f"{source} {str(path)!r}: cannot find that home folder; give the data folder as a "
                         "plain path with --data-dir or MNIST_NN_DATA") from None


def folder_error(folder: Path, exc: OSError) -> MnistError:
    return MnistError(f"data folder {folder}: {exc.strerror or exc}; choose another with --data-dir or MNIST_NN_DATA")


# --------------------------------------------------------------------------- bounded reads

def open_regular(path: Path):
    """Open ``path`` for reading if it is a regular file (no FIFO wait: O_NONBLOCK, then fstat)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_regular(path: Path) -> bool:
    """True for a regular file; False where there is none. A folder that cannot be searched (a name
    too long, no permission) raises OSError, so that the caller names the folder, not a missing file."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False


def content_sha256(path: Path, limit: int, sink=None) -> tuple[str, int]:
    """SHA-256 and length of the uncompressed content of ``path`` (gzip or raw), also written to ``sink``.

    Reading stops as soon as the content passes ``limit`` bytes (a gzip bomb, an endless file), and a
    gzip file larger than ``limit`` plus gzip's overhead is refused before it is unpacked.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with open_regular(path) as raw:
            packed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            if os.fstat(raw.fileno()).st_size > compressed_limit(limit):
                raise MnistFormatError(f"{path}: larger than a genuine file can be ({limit} bytes)")
            source = gzip.GzipFile(fileobj=raw) if packed else raw
            while chunk := source.read(min(CHUNK, limit + 1 - size)):
                size += len(chunk)
                if size > limit:
                    raise MnistFormatError(f"{path}: unpacks to more than the {limit} bytes the genuine file has")
                digest.update(chunk)
                if sink is not None:
                    sink(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise MnistFormatError(f"{path}: not a readable gzip file ({exc})") from None
    return digest.hexdigest(), size


def compressed_limit(size: int) -> int:
    """The most bytes a gzip of ``size`` bytes can take (stored blocks add 5 bytes per 64 KiB), with room."""
    return size + size // 100 + 65536


# --------------------------------------------------------------------------- stamps

def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _signature(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_stamp(path: Path, sha: str) -> str | None:
    """Record that ``path`` verified; return why not (read-only folder, disk full) or None."""
    try:
        write_text(stamp_path(path), json.dumps({**_signature(path), "sha256": sha}))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def is_verified(path: Path, expected_sha256: str, limit: int | None = None, unstamped: list | None = None) -> bool:
    """True when the uncompressed content of ``path`` has the expected hash (at most ``limit`` bytes).

    The result is remembered in a stamp file keyed on size and modification time, so a file is hashed
    once, not at every load. Where the stamp cannot be written (a read-only cache, a full disk) the
    file is still used, and why is appended to ``unstamped``.
    """
    limit = limit if limit is not None else max(size for _, size in CHECKSUMS.values())
    try:
        with open_regular(stamp_path(path)) as f:
            record = json.loads(f.read(STAMP_LIMIT + 1)) if os.fstat(f.fileno()).st_size <= STAMP_LIMIT else None
        if record == {**_signature(path), "sha256": expected_sha256}:
            return True
    except (OSError, ValueError):
        pass
    try:
        sha, _ = content_sha256(path, limit)
    except (MnistFormatError, OSError):
        return False
    if sha != expected_sha256:
        return False
    reason = write_stamp(path, sha)
    if reason and unstamped is not None:
        unstamped.append(reason)
    return True


def cached_path(name: str, folder: Path) -> Path | None:
    """The cached file for ``name``: raw IDX as downloads leave it, or gzip as a user may place it."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if is_regular(candidate):
            return candidate
    return None


def odd_entry(name: str, folder: Path) -> str | None:
    """What stands where ``name`` (or ``name.gz``) should be, if it is not a regular file: a FIFO, a
    device, a folder; None where there is nothing or a regular file. Such an entry is never read."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        try:
            mode = candidate.stat().st_mode
        except (OSError, ValueError):
            continue
        if not stat.S_ISREG(mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
            return f"{candidate} is {kind}, not a data file"
    return None


# --------------------------------------------------------------------------- temporaries

@contextmanager
def scratch_folder(folder: Path):
    """A temporary folder for one download, named for this process so a later start can tell it is dead."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-") as scratch:
        yield Path(scratch)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process: alive
    return True


def remove_dead_temporaries(folder: Path, age_s: float = 3600.0) -> None:
    """Remove what killed downloads left: folders of processes that no longer run, and old ``.part`` stamps."""
    now = time.time()
    for entry in [*folder.glob(f"{TEMPORARY_PREFIX}*"), *folder.glob(".*.part")]:
        try:
            owner = entry.name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
            if entry.name.startswith(TEMPORARY_PREFIX) and owner.isdigit():
                dead = not _alive(int(owner))
            else:  # a stamp's temporary, or a folder from before names carried the process id
                dead = now - entry.lstat().st_mtime > age_s
            if dead:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        except OSError:
            pass
