"""Fetch the four MNIST files from a list of mirrors into the cache folder, verified, within limits.

Each ``.gz`` is downloaded into a temporary folder inside the cache folder (named for this process),
unpacked beside it, and renamed into place only once the SHA-256 of the *uncompressed* content
matches :data:`~mnist_nn.data.cache.CHECKSUMS`: every mirror's gzip packaging is accepted and the
cache never holds a partial or corrupt file. What a mirror can cost is bounded by the genuine file:
at most :func:`~mnist_nn.data.cache.compressed_limit` bytes downloaded, at most the file's size
unpacked, and an overall deadline of ``DEADLINE_BASE_S`` plus the file's size at ``MIN_RATE``; past
any of these the mirror counts as failed and the next one is tried.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlsplit
from urllib.request import url2pathname

from mnist_nn.data import cache
from mnist_nn.data.cache import cached_path, compressed_limit, folder_error, stamp_path
from mnist_nn.errors import MnistDownloadError, MnistFormatError

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# (connect, read) seconds: a dead mirror should cost seconds, not minutes.
TIMEOUT = (5.0, 20.0)
RETRIES = 2
# A file's whole download must finish within DEADLINE_BASE_S + its uncompressed size / MIN_RATE
# (train images: 30 s + 47 MB at 128 KiB/s = 6.5 min, i.e. ~25 KB/s of gzip), so a mirror that
# trickles a byte just inside the read timeout (slowloris) is given up on.
DEADLINE_BASE_S = 30.0
MIN_RATE = 128 * 1024


class _LocalError(Exception):
    """Writing into the cache folder failed: no other mirror can help."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: error messages never echo a secret."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url


def _as_url(text: str) -> str:
    try:
        scheme = urlparse(text).scheme
    except ValueError as exc:
        raise MnistDownloadError(f"mirror {redact(text)!r} is not a valid URL ({exc}); fix --mirror or MNIST_NN_MIRROR") from None
    if len(scheme) <= 1:  # a folder path (a Windows drive letter parses as a one-letter scheme)
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise MnistDownloadError(f"mirror {text!r} is neither a URL nor a folder; fix --mirror or MNIST_NN_MIRROR")
        return folder.resolve().as_uri()
    if scheme not in ("http", "https", "file"):
        raise MnistDownloadError(f"mirror {redact(text)!r} is not an http://, https:// or file:// URL or a folder; "
                                 "fix --mirror or MNIST_NN_MIRROR")
    return text


def mirror_list(mirrors: str | list[str] | tuple[str, ...] | None = None, defaults: bool = True) -> list[str]:
    """Mirrors in the order they are tried: the given ones, then ``$MNIST_NN_MIRROR``, then the defaults.

    Each source may hold several URLs (http, https, file://) or folders, separated by commas.
    """
    given = [mirrors] if isinstance(mirrors, str) else list(mirrors or [])
    given.append(os.environ.get("MNIST_NN_MIRROR", ""))
    urls = [u.strip() for text in given for u in text.split(",") if u.strip()]
    if defaults:
        urls += DEFAULT_MIRRORS
    result: list[str] = []
    for url in map(_as_url, urls):
        url = url if url.endswith("/") else url + "/"
        if url not in result:
            result.append(url)
    return result


def offline_requested(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("MNIST_NN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


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
    session.headers["Accept-Encoding"] = "identity"  # the files are gzip already
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _headers_by(deadline: float, session, url: str, timeout):
    """``session.get(url, stream=True)``, given up at ``deadline``: the read timeout restarts with every
    byte, so a mirror that sends its status line and headers a byte at a time would otherwise hold the
    download for ever. The request runs in a daemon thread (it ends at the next read timeout or when the
    server stops); the caller moves on to the next mirror."""
    outcome: dict = {}

    def request():
        try:
            outcome["response"] = session.get(url, stream=True, timeout=timeout)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=request, name="mnist_nn-download", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise MnistFormatError("too slow: its response headers were not complete by the file's deadline")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["response"]


def _chunks(url: str, session, timeout, progress, deadline: float):
    """Yield the body of ``url`` (HTTP(S) or file://) as it arrives, in chunks of at most 1 MiB."""
    if urlparse(url).scheme == "file":
        with cache.open_regular(Path(url2pathname(urlparse(url).path))) as src:
            while chunk := src.read(cache.CHUNK):
                yield chunk
        return
    with _headers_by(deadline, session, url, timeout) as response:
        response.raise_for_status()
        progress.reset(total=int(response.headers.get("Content-Length") or 0) or None)
        read = getattr(response.raw, "read1", response.raw.read)  # read1: whatever arrived, not a full chunk
        while chunk := read(cache.CHUNK, decode_content=True):
            progress.update(len(chunk))
            yield chunk


def _download(url: str, dest: Path, size: int, session, timeout, progress) -> None:
    """Stream ``url`` into ``dest``, giving up past the byte limit or the deadline."""
    limit, received = compressed_limit(size), 0
    deadline = time.monotonic() + DEADLINE_BASE_S + size / MIN_RATE
    with _local(dest.open, "wb") as out:
        for chunk in _chunks(url, session, timeout, progress, deadline):
            received += len(chunk)
            if received > limit:
                raise MnistFormatError(f"sent more than {limit} bytes, more than the genuine file can take")
            if time.monotonic() > deadline:
                raise MnistFormatError(f"too slow: not done within {DEADLINE_BASE_S + size / MIN_RATE:.0f} s")
            _local(out.write, chunk)


def _local(action, *args):
    try:
        return action(*args)
    except OSError as exc:
        raise _LocalError(exc.strerror or str(exc)) from None


def _describe_failure(exc: BaseException) -> str:
    import requests

    if isinstance(exc, MnistFormatError):
        return str(exc).split(": ", 1)[-1] if str(exc).startswith("/") else str(exc)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, (requests.Timeout, requests.exceptions.ReadTimeout)):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({type(exc.__context__ or exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _download_one(name: str, folder: Path, mirrors: list[str], checksums: dict, session, timeout,
                  quiet: bool) -> tuple[Path, str | None]:
    """Try each mirror in turn until one gives a file whose content verifies; return it and why it has no stamp."""
    import requests
    import urllib3
    from tqdm.auto import tqdm

    expected_sha, size = checksums[name]
    final = folder / name  # cached uncompressed: a load then costs a read, not a gunzip
    failures = []
    for mirror in mirrors:
        try:
            with cache.scratch_folder(folder) as scratch, \
                    tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=f"{name}.gz", leave=False,
                         disable=quiet or not sys.stderr.isatty()) as progress:
                packed, unpacked = scratch / f"{name}.gz", scratch / name
                _download(mirror + f"{name}.gz", packed, size, session, timeout, progress)
                with _local(unpacked.open, "wb") as out:
                    sha, got = cache.content_sha256(packed, size, sink=lambda chunk: _local(out.write, chunk))
                if sha != expected_sha:
                    raise MnistFormatError(f"checksum mismatch ({got} bytes uncompressed, sha256 {sha[:12]}...)")
                _local(os.replace, unpacked, final)
            return final, cache.write_stamp(final, sha)
        except _LocalError as exc:
            raise MnistDownloadError(f"cannot write {final.name} into the data folder {folder} ({exc}); free "
                                     "some space or choose another folder with --data-dir or MNIST_NN_DATA") from None
        except (OSError, requests.RequestException, urllib3.exceptions.HTTPError, MnistFormatError) as exc:
            failures.append(f"{mirror} ({_describe_failure(exc)})")
    message = (f"could not download {name}.gz from any mirror: " + "; ".join(failures)
               + ". Check your connection, or pass a working --mirror / MNIST_NN_MIRROR")
    for mirror in mirrors:
        message = message.replace(mirror, redact(mirror))
    raise MnistDownloadError(message)


def fetch(data_dir=None, mirrors=None, *, force: bool = False, quiet: bool = False,
          offline: bool | None = None, checksums: dict | None = None, timeout=TIMEOUT,
          use_default_mirrors: bool = True) -> dict[str, Path]:
    """Make sure the four verified IDX files are in the cache folder; return their paths by name.

    Files already there and verified are not downloaded again (unless ``force``). In offline mode
    (``offline=True`` or ``MNIST_NN_OFFLINE=1``) the network is never touched. A read-only cache of
    good files works: they are verified in memory each time, and one note says so (unless ``quiet``).
    ``checksums`` maps each file name to ``(sha256, size)`` of its uncompressed content; tests pass
    their own table, the default is the canonical one.
    """
    checksums = checksums or cache.CHECKSUMS
    folder = cache.data_dir_path(data_dir)
    offline = offline_requested(offline)
    paths: dict[str, Path] = {}
    missing, unstamped = [], []
    try:
        for name, (sha, size) in checksums.items():
            path = cached_path(name, folder)
            if path is not None and not force:
                if cache.is_verified(path, sha, size, unstamped):
                    paths[name] = path
                    continue
                if offline:
                    raise MnistDownloadError(f"{path} is corrupt (checksum mismatch); delete it and download "
                                             "again, or replace it with a good copy")
            missing.append(name)
        if missing and offline:
            odd = [entry for entry in (cache.odd_entry(name, folder) for name in missing) if entry]
            if odd:
                raise MnistDownloadError(f"offline mode and {odd[0]}; replace it with the real file, or remove it "
                                         "and drop --offline / MNIST_NN_OFFLINE to download it")
            raise MnistDownloadError(f"offline mode and {', '.join(missing)} (raw or .gz) not in {folder}; "
                                     "put the files there or drop --offline / MNIST_NN_OFFLINE")
        if missing:
            urls = mirror_list(mirrors, defaults=use_default_mirrors)
            if not urls:
                raise MnistDownloadError("no mirror to download from; pass --mirror URL or set MNIST_NN_MIRROR")
            folder.mkdir(parents=True, exist_ok=True)
            cache.remove_dead_temporaries(folder)
            if not quiet:
                megabytes = sum(compressed_limit(checksums[name][1]) for name in missing) / 5e6  # gzip: ~1/5
                print(f"downloading {len(missing)} MNIST file{'s' * (len(missing) > 1)} (about {megabytes:.0f} MB) "
                      f"into {folder}", file=sys.stderr)
            with _session() as session:
                for name in missing:
                    stale = cached_path(name, folder)
                    paths[name], reason = _download_one(name, folder, urls, checksums, session, timeout, quiet)
                    unstamped += [reason] if reason else []
                    if stale is not None and stale != paths[name]:
                        stale.unlink(missing_ok=True)  # a corrupt copy the verified file now replaces
                        stamp_path(stale).unlink(missing_ok=True)
    except OSError as exc:
        raise folder_error(folder, exc) from None
    if unstamped and not quiet:
        print(f"note: cannot write .verified stamps in {folder} ({unstamped[0]}); the files verified, "
              "and will be hashed again at each load", file=sys.stderr)
    return {name: paths[name] for name in checksums}
