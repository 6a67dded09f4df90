"""Shared fixtures: tiny IDX data sets, a fault-injecting HTTP mirror on 127.0.0.1, the real data set.

Real-data tests need the full MNIST set. They run when ``MNIST_NN_TEST_MIRROR`` names a mirror
(CI serves ../shared/mnist on loopback), when ``../shared/mnist`` sits beside the checkout (the
tests then serve it themselves), when the user's own cache holds it, or when ``MNIST_NN_MIRROR``
names a mirror (see :func:`real_source`); otherwise they skip and say how to enable them. With
``MNIST_NN_REQUIRE_REAL_DATA=1`` (set by .ci/run) a missing data set is an error, not a skip.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_nn import data as mnist_data

REPO = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "mnist"


# --------------------------------------------------------------------------- tiny IDX data

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Serialise a uint8 array as IDX: magic, the dimensions (big-endian uint32), the bytes."""
    dims = np.array(array.shape, dtype=">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 'digits' a small network can learn: each class lights its own blob of pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        r0, c0 = 3 + 12 * row + rng.integers(-2, 3), 2 + 5 * col + rng.integers(-1, 2)
        images[i, r0:r0 + 8, c0:c0 + 4] = rng.integers(120, 256, (8, 4))
        noise = rng.random((28, 28)) < 0.03
        images[i][noise] = rng.integers(1, 256, noise.sum())
    return images, labels


class TinyMnist:
    """Four IDX files (raw bytes) for a small data set, and their checksum table."""

    def __init__(self, n_train: int = 600, n_test: int = 200, seed: int = 0):
        train_x, train_y = make_digits(n_train, seed)
        test_x, test_y = make_digits(n_test, seed + 1)
        self.arrays = {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y,
                       "t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}
        self.raw = {name: idx_bytes(a, 2051 if a.ndim == 3 else 2049) for name, a in self.arrays.items()}
        self.gz = {name: gzip.compress(raw, mtime=0) for name, raw in self.raw.items()}
        self.checksums = {name: (hashlib.sha256(raw).hexdigest(), len(raw)) for name, raw in self.raw.items()}

    def write(self, folder: Path, compressed: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.raw:
            (folder / (name + ".gz" if compressed else name)).write_bytes(self.gz[name] if compressed else self.raw[name])
        return folder


@pytest.fixture(scope="session")
def tiny() -> TinyMnist:
    return TinyMnist()


@pytest.fixture
def tiny_checksums(tiny, monkeypatch):
    """Make the package accept the tiny files as if they were MNIST (the default table stays canonical)."""
    table = dict(tiny.checksums)
    monkeypatch.setattr(mnist_data, "CHECKSUMS", table)
    monkeypatch.setattr(mnist_data.cache, "CHECKSUMS", table)  # where fetch and the CLI look it up
    return table


@pytest.fixture
def tiny_cache(tiny, tmp_path) -> Path:
    """A cache folder holding the tiny files with stamps that vouch for them, as a verified cache does.

    A subprocess trusts the stamps (that is what they are for), so the command lines can be tested
    end to end on tiny data without monkeypatching.
    """
    return write_trusted_cache(tmp_path / "cache", tiny)


def write_trusted_cache(folder: Path, tiny: TinyMnist) -> Path:
    """The tiny IDX files in ``folder`` with stamps that vouch for them as the real files."""
    tiny.write(folder, compressed=False)
    for name, (sha, _) in mnist_data.CHECKSUMS.items():
        stat = (folder / name).stat()
        (folder / f"{name}.verified").write_text(
            json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}))
    return folder


# --------------------------------------------------------------------------- HTTP mirror with faults

class Mirror:
    """What one mirror prefix (``/<name>/``) serves, with a queue of faults per file.

    Faults, consumed one per request: ``"404"``, ``"500"``, ``"truncate"`` (promise the full length,
    send half, close), ``"html"`` (an error page under the .gz name), ``"wrong"`` (valid gzip, wrong
    content), ``"stall"`` (send nothing for ``stall_s`` seconds), ``"hang"`` (send half, then stall
    for 30 s), ``"bomb"`` (a small gzip of ``bomb_bytes`` zeros), ``"endless"`` (zeros until the client
    hangs up, no length), ``"trickle"`` (one byte every ``trickle_s`` for ``trickle_total_s``, then the
    rest: a slowloris that gives up in the end), ``"slow_headers"`` (the status line and headers one
    byte every ``trickle_s`` for ``trickle_total_s``). An empty queue serves the file.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.faults: dict[str, list[str]] = {}
        self.requests: list[str] = []


class FaultServer:
    def __init__(self):
        self.mirrors: dict[str, Mirror] = {}
        self.stall_s = 3.0
        self.trickle_s, self.trickle_total_s = 0.05, 20.0
        self.bomb_bytes = 64 << 20
        self.sent: dict[str, int] = {}  # bytes of body sent, by file
        self.slow_headers_ended = False  # a "slow_headers" response has stopped sending
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                mirror = server.mirrors.get(parts[0]) if len(parts) == 2 else None
                if mirror is None or parts[1] not in mirror.files:
                    return self.send_error(404)
                mirror.requests.append(parts[1])
                body = mirror.files[parts[1]]
                queue = mirror.faults.get(parts[1], [])
                fault = queue.pop(0) if queue else None
                if fault in ("404", "500"):
                    return self.send_error(int(fault))
                if fault == "html":
                    body = b"<!DOCTYPE html><html><body>Access denied</body></html>"
                if fault == "wrong":
                    body = gzip.compress(b"\x00\x00\x08\x01" + bytes(100), mtime=0)
                if fault == "stall":
                    time.sleep(server.stall_s)
                if fault == "bomb":
                    body = gzip.compress(bytes(server.bomb_bytes), compresslevel=9, mtime=0)
                if fault == "endless":
                    return self.send_endless(parts[1])
                if fault == "slow_headers":
                    return self.send_slow_headers(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "trickle":
                    return self.send_trickle(parts[1], body)
                if fault in ("truncate", "hang"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "hang":  # half the file, then nothing for a long while
                        time.sleep(30)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def send_endless(self, name):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                chunk = bytes(1 << 16)
                try:
                    while True:
                        self.wfile.write(chunk)
                        server.sent[name] = server.sent.get(name, 0) + len(chunk)
                except OSError:  # the client hung up
                    self.close_connection = True

            def send_slow_headers(self, body):
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        f"Content-Length: {len(body)}\r\n" + "X-Pad: " + "x" * 10_000 + "\r\n\r\n").encode()
                ends = time.monotonic() + server.trickle_total_s
                try:
                    for i in range(len(head)):
                        if time.monotonic() > ends:
                            break
                        self.wfile.write(head[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle_s)
                except OSError:
                    pass
                server.slow_headers_ended = True
                self.close_connection = True

            def send_trickle(self, name, body):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                ends, sent = time.monotonic() + server.trickle_total_s, 0
                try:
                    while time.monotonic() < ends and sent < len(body) - 1:
                        self.wfile.write(body[sent:sent + 1])
                        self.wfile.flush()
                        sent += 1
                        time.sleep(server.trickle_s)
                    self.wfile.write(body[sent:])
                except OSError:
                    pass
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, files: dict[str, bytes]) -> str:
        """Serve ``files`` (by data set name, without .gz) at /<name>/<file>.gz; return the mirror URL."""
        self.mirrors[name] = Mirror({f"{key}.gz": body for key, body in files.items()})
        return f"http://127.0.0.1:{self.port}/{name}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FaultServer()
    yield srv
    srv.close()


# --------------------------------------------------------------------------- the real data set

def _serve_folder(folder: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _user_cache() -> Path | None:
    """The user's own cache (``MNIST_NN_DATA`` or the default folder) when it holds the four verified files."""
    try:
        folder = mnist_data.data_dir_path()
        paths = [mnist_data.cached_path(name, folder) for name in mnist_data.FILE_NAMES]
        if all(p is not None and mnist_data.is_verified(p, mnist_data.CHECKSUMS[p.name.removesuffix(".gz")][0])
               for p in paths):
            return folder
    except (OSError, mnist_data.MnistError):
        pass
    return None


@pytest.fixture(scope="session")
def real_source():
    """Where the real MNIST comes from: ``("mirror", URL)`` or ``("cache", folder)``; else skip (fail in CI).

    In order: ``MNIST_NN_TEST_MIRROR``; ``../shared/mnist`` beside the checkout (served on loopback, so
    the real download path runs); the user's own verified cache (``MNIST_NN_DATA`` or the default
    folder, used read-only); ``MNIST_NN_MIRROR``.
    """
    url = os.environ.get("MNIST_NN_TEST_MIRROR")
    if url:
        yield "mirror", url
        return
    if SHARED_MNIST.is_dir() and all((SHARED_MNIST / f"{n}.gz").is_file() for n in mnist_data.FILE_NAMES):
        httpd = _serve_folder(SHARED_MNIST)
        yield "mirror", f"http://127.0.0.1:{httpd.server_address[1]}/"
        httpd.shutdown()
        return
    folder = _user_cache()
    if folder is not None:
        yield "cache", folder
        return
    if os.environ.get("MNIST_NN_MIRROR"):
        yield "mirror", os.environ["MNIST_NN_MIRROR"]
        return
    message = ("real MNIST not available: download it once (`python -m mnist_nn.data download`, into "
               "$MNIST_NN_DATA or the default cache), or set MNIST_NN_TEST_MIRROR or MNIST_NN_MIRROR to a mirror "
               "(e.g. `python -m http.server --bind 127.0.0.1 --directory FOLDER_WITH_THE_GZ_FILES 8765` and "
               "MNIST_NN_TEST_MIRROR=http://127.0.0.1:8765/), or keep ../shared/mnist beside the checkout")
    if os.environ.get("MNIST_NN_REQUIRE_REAL_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_data_dir(real_source, tmp_path_factory) -> Path:
    """A cache folder holding the real MNIST: filled once per session through the real download path
    from a mirror, or the user's own cache."""
    kind, where = real_source
    if kind == "cache":
        return where
    folder = tmp_path_factory.mktemp("mnist-real")
    mnist_data.fetch(folder, where, quiet=True, use_default_mirrors=False)
    return folder
