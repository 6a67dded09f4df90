"""Shared fixtures: tiny IDX data sets, a fault-injecting HTTP mirror on 127.0.0.1, the real data set.

Real-data tests need the full MNIST set. They run when ``MNIST_NN_TEST_MIRROR`` names a mirror
(CI serves ../shared/mnist on loopback) or when ``../shared/mnist`` sits beside the checkout (the
tests then serve it themselves); otherwise they skip and say how to enable them. With
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
    return table


@pytest.fixture
def tiny_cache(tiny, tmp_path) -> Path:
    """A cache folder holding the tiny files with stamps that vouch for them, as a verified cache does.

    A subprocess trusts the stamps (that is what they are for), so the command lines can be tested
    end to end on tiny data without monkeypatching.
    """
    folder = tiny.write(tmp_path / "cache", compressed=False)
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
    for 30 s). An empty queue serves the file.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.faults: dict[str, list[str]] = {}
        self.requests: list[str] = []


class FaultServer:
    def __init__(self):
        self.mirrors: dict[str, Mirror] = {}
        self.stall_s = 3.0
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
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault in ("truncate", "hang"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "hang":  # half the file, then nothing for a long while
                        time.sleep(30)
                    self.close_connection = True
                    return
                self.wfile.write(body)

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


@pytest.fixture(scope="session")
def real_mirror():
    """URL of a mirror holding the real MNIST files, or skip (fail in CI) with how to get one."""
    url = os.environ.get("MNIST_NN_TEST_MIRROR")
    if url:
        yield url
        return
    if SHARED_MNIST.is_dir() and all((SHARED_MNIST / f"{n}.gz").is_file() for n in mnist_data.FILE_NAMES):
        httpd = _serve_folder(SHARED_MNIST)
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        httpd.shutdown()
        return
    message = ("real MNIST not available: set MNIST_NN_TEST_MIRROR to a mirror URL (e.g. serve a folder holding "
               "the four .gz files with `python -m http.server --bind 127.0.0.1 8765` and set "
               "MNIST_NN_TEST_MIRROR=http://127.0.0.1:8765/), or keep ../shared/mnist beside the checkout")
    if os.environ.get("MNIST_NN_REQUIRE_REAL_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_data_dir(real_mirror, tmp_path_factory) -> Path:
    """A cache folder filled once per session through the real download path."""
    folder = tmp_path_factory.mktemp("mnist-real")
    mnist_data.fetch(folder, real_mirror, quiet=True, use_default_mirrors=False)
    return folder
