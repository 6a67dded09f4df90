"""The data layer: parsing every kind of broken file, downloading through faults, cache and CLI."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from mnist_nn import data as mnist_data
from mnist_nn.data import MnistDownloadError, MnistFormatError, fetch, load_mnist, parse_idx

from conftest import idx_bytes

FAST = (2.0, 1.0)  # (connect, read) timeouts for the loopback server


def cache_entries(folder):
    """Everything in the cache folder except verified files and their stamps."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- parsing

def test_parse_good_files_raw_and_gzip(tiny, tmp_path):
    for compressed in (False, True):
        folder = tiny.write(tmp_path / str(compressed), compressed=compressed)
        suffix = ".gz" if compressed else ""
        images = parse_idx(folder / f"train-images-idx3-ubyte{suffix}", "images")
        labels = parse_idx(folder / f"train-labels-idx1-ubyte{suffix}", "labels")
        np.testing.assert_array_equal(images, tiny.arrays["train-images-idx3-ubyte"])
        np.testing.assert_array_equal(labels, tiny.arrays["train-labels-idx1-ubyte"])
        assert images.dtype == np.uint8 and images.shape == (600, 28, 28)


BROKEN = {
    "empty": (b"", "empty"),
    "truncated header": (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
    "truncated body": (idx_bytes(np.zeros((3, 28, 28), np.uint8), 2051)[:-10], "truncated"),
    "trailing bytes": (idx_bytes(np.zeros((3, 28, 28), np.uint8), 2051) + b"xx", "trailing"),
    "wrong magic": (idx_bytes(np.zeros((3, 28, 28), np.uint8), 2049), "wrong magic number 2049"),
    "wrong dimensions": (idx_bytes(np.zeros((3, 28, 27), np.uint8), 2051), "28x27"),
    "html page": (b"<!DOCTYPE html><html>Not found</html>", "HTML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("compressed", [False, True])
def test_parse_broken_images(case, compressed, tmp_path):
    content, expected = BROKEN[case]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(content) if compressed and content else content)
    with pytest.raises(MnistFormatError, match=expected) as info:
        parse_idx(path, "images")
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_truncated_gzip_stream(tiny, tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(tiny.gz["t10k-images-idx3-ubyte"][:300])
    with pytest.raises(MnistFormatError, match="gzip data is truncated or corrupt"):
        parse_idx(path, "images")


def test_parse_labels_out_of_range_and_count_mismatch(tiny, tmp_path, tiny_checksums):
    bad = tmp_path / "labels"
    bad.write_bytes(idx_bytes(np.array([1, 12, 3], np.uint8), 2049))
    with pytest.raises(MnistFormatError, match="out of range"):
        parse_idx(bad, "labels")
    folder = tiny.write(tmp_path / "cache", compressed=False)
    labels = tiny.arrays["t10k-labels-idx1-ubyte"][:-1]
    raw = idx_bytes(labels, 2049)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(raw)
    import hashlib
    tiny_checksums["t10k-labels-idx1-ubyte"] = (hashlib.sha256(raw).hexdigest(), len(raw))
    with pytest.raises(MnistFormatError, match="200 images but .* 199 labels"):
        load_mnist(folder, validation_size=100, download=False)


# --------------------------------------------------------------------------- downloads

def test_download_verify_and_cache(tiny, tiny_checksums, server, tmp_path):
    url = server.add("m1", tiny.gz)
    folder = tmp_path / "cache"
    paths = fetch(folder, url, quiet=True, use_default_mirrors=False, timeout=FAST)
    assert sorted(p.name for p in paths.values()) == sorted(tiny.raw)
    for name, path in paths.items():
        assert path.read_bytes() == tiny.raw[name]  # cached uncompressed, exactly the canonical content
    assert len(server.mirrors["m1"].requests) == 4
    # A second fetch is served from the cache: no request, no hashing (the stamps vouch).
    fetch(folder, url, quiet=True, use_default_mirrors=False, timeout=FAST)
    assert len(server.mirrors["m1"].requests) == 4
    data = load_mnist(folder, validation_size=100, download=False)
    assert data.train.images.shape == (500, 784) and data.validation.images.shape == (100, 784)
    assert data.test.images.shape == (200, 784) and data.train.images.dtype == np.float32
    assert 0.0 <= data.train.images.min() and data.train.images.max() <= 1.0
    np.testing.assert_array_equal(data.validation.labels, tiny.arrays["train-labels-idx1-ubyte"][500:])
    np.testing.assert_allclose(data.test.images * 255, tiny.arrays["t10k-images-idx3-ubyte"].reshape(200, -1),
                               atol=1e-4)


@pytest.mark.parametrize("fault", ["404", "truncate", "html", "wrong", "stall"])
def test_fault_on_first_mirror_falls_through_to_second(fault, tiny, tiny_checksums, server, tmp_path):
    server.stall_s = 2.0
    first = server.add("m1", tiny.gz)
    second = server.add("m2", tiny.gz)
    server.mirrors["m1"].faults["train-images-idx3-ubyte.gz"] = [fault] * 10
    folder = tmp_path / "cache"
    paths = fetch(folder, [first, second], quiet=True, use_default_mirrors=False, timeout=(2.0, 0.5))
    assert paths["train-images-idx3-ubyte"].read_bytes() == tiny.raw["train-images-idx3-ubyte"]
    assert "train-images-idx3-ubyte.gz" in server.mirrors["m2"].requests
    assert server.mirrors["m2"].requests == ["train-images-idx3-ubyte.gz"]  # the others came from m1
    assert not [n for n in cache_entries(folder) if n.startswith(".")]  # no temporary left behind


def test_server_error_succeeds_on_retry(tiny, tiny_checksums, server, tmp_path):
    url = server.add("m1", tiny.gz)
    server.mirrors["m1"].faults["t10k-labels-idx1-ubyte.gz"] = ["500"]
    paths = fetch(tmp_path, url, quiet=True, use_default_mirrors=False, timeout=FAST)
    assert paths["t10k-labels-idx1-ubyte"].read_bytes() == tiny.raw["t10k-labels-idx1-ubyte"]
    assert server.mirrors["m1"].requests.count("t10k-labels-idx1-ubyte.gz") == 2


def test_every_mirror_failing_gives_one_error_listing_each(tiny, tiny_checksums, server, tmp_path):
    first = server.add("m1", tiny.gz)
    second = server.add("m2", tiny.gz)
    server.mirrors["m1"].faults["train-labels-idx1-ubyte.gz"] = ["404"]
    server.mirrors["m2"].faults["train-labels-idx1-ubyte.gz"] = ["wrong"]
    folder = tmp_path / "cache"
    with pytest.raises(MnistDownloadError) as info:
        fetch(folder, [first, second], quiet=True, use_default_mirrors=False, timeout=FAST)
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in message
    assert f"{first} (HTTP 404" in message and f"{second} (checksum mismatch" in message
    # Files fetched before the failure are kept (verified); the failed one is absent, nothing partial.
    assert "train-labels-idx1-ubyte" not in cache_entries(folder)
    assert not [n for n in cache_entries(folder) if n.startswith(".")]


def test_corrupt_cached_file_is_replaced(tiny, tiny_checksums, server, tmp_path):
    url = server.add("m1", tiny.gz)
    folder = tiny.write(tmp_path / "cache", compressed=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    paths = fetch(folder, url, quiet=True, use_default_mirrors=False, timeout=FAST)
    assert server.mirrors["m1"].requests == ["train-labels-idx1-ubyte.gz"]
    assert paths["train-labels-idx1-ubyte"].read_bytes() == tiny.raw["train-labels-idx1-ubyte"]


def test_force_downloads_again(tiny, tiny_checksums, server, tmp_path):
    url = server.add("m1", tiny.gz)
    fetch(tmp_path, url, quiet=True, use_default_mirrors=False, timeout=FAST)
    fetch(tmp_path, url, quiet=True, use_default_mirrors=False, timeout=FAST, force=True)
    assert len(server.mirrors["m1"].requests) == 8


def test_file_url_mirror_and_env_mirror(tiny, tiny_checksums, tmp_path, monkeypatch):
    source = tiny.write(tmp_path / "source")
    monkeypatch.setenv("MNIST_NN_MIRROR", source.as_uri())
    paths = fetch(tmp_path / "cache", quiet=True, use_default_mirrors=False)
    assert paths["t10k-images-idx3-ubyte"].read_bytes() == tiny.raw["t10k-images-idx3-ubyte"]


def test_mirror_order_and_bad_scheme(monkeypatch):
    monkeypatch.setenv("MNIST_NN_MIRROR", "http://env-a/, http://env-b")
    urls = mnist_data.mirror_list(["http://mine"])
    assert urls[:3] == ["http://mine/", "http://env-a/", "http://env-b/"]
    assert urls[3:] == list(mnist_data.DEFAULT_MIRRORS)
    with pytest.raises(MnistDownloadError, match="not an http"):
        mnist_data.mirror_list("ftp://example.org/mnist")


def test_offline_never_touches_network(tiny, tiny_checksums, server, tmp_path, monkeypatch):
    url = server.add("m1", tiny.gz)
    monkeypatch.setenv("MNIST_NN_OFFLINE", "1")
    with pytest.raises(MnistDownloadError, match="offline mode and train-images-idx3-ubyte.*not in"):
        fetch(tmp_path, url, quiet=True, use_default_mirrors=False)
    assert server.mirrors["m1"].requests == []


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_NN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_data.data_dir_path() == tmp_path / "xdg" / "mnist_nn"
    monkeypatch.setenv("MNIST_NN_DATA", str(tmp_path / "env"))
    assert mnist_data.data_dir_path() == tmp_path / "env"
    assert mnist_data.data_dir_path(tmp_path / "flag") == tmp_path / "flag"


def test_user_agent_names_the_package(tiny, tiny_checksums, tmp_path):
    from mnist_nn import __version__
    session = mnist_data._session()
    assert session.headers["User-Agent"].startswith(f"mnist_nn/{__version__}")
    assert session.verify is True  # certificate checks stay on


# --------------------------------------------------------------------------- command line

def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mnist_nn.data", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_info_and_offline_error(tiny_cache, tmp_path):
    result = run_cli("info", "--data-dir", str(tiny_cache))
    assert result.returncode == 0
    assert result.stdout.count(" verified ") == 4 and "all four files present" in result.stdout
    result = run_cli("download", "--offline", "--data-dir", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: offline mode") and "Traceback" not in result.stderr
    result = run_cli("download", "--mirror", "gopher://x", "--data-dir", str(tmp_path / "empty"))
    assert result.returncode == 1 and "not an http" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- the real data set

@pytest.mark.realdata
def test_real_mnist(real_data_dir):
    data = load_mnist(real_data_dir, download=False)
    assert data.train.images.shape == (50_000, 784) and data.validation.images.shape == (10_000, 784)
    assert data.test.images.shape == (10_000, 784)
    assert data.train.images.dtype == np.float32 and data.train.labels.dtype == np.uint8
    assert data.train.images.min() == 0.0 and data.train.images.max() == 1.0
    assert data.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    all_train = np.concatenate([data.train.labels, data.validation.labels])
    assert np.bincount(all_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    full = load_mnist(real_data_dir, validation_size=0, download=False)
    assert full.train.images.shape == (60_000, 784) and full.validation.images.shape == (0, 784)


def test_killed_mid_download_leaves_no_file_in_place(tiny, server, tmp_path):
    """kill -9 while half of a file has arrived: nothing appears under the file's name, and the next
    download (which would replace the leftovers) still works."""
    import json as json_module
    import signal
    import time

    url = server.add("m1", tiny.gz)
    server.mirrors["m1"].faults["train-images-idx3-ubyte.gz"] = ["hang"]
    folder = tmp_path / "cache"
    table = json_module.dumps(tiny.checksums)
    code = ("import json, sys; from mnist_nn import data; "
            f"data.fetch(sys.argv[1], sys.argv[2], quiet=True, use_default_mirrors=False, checksums=json.loads({table!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), url])
    deadline = time.time() + 60
    while "train-images-idx3-ubyte.gz" not in server.mirrors["m1"].requests and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the first half is on disk now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert "train-images-idx3-ubyte" not in cache_entries(folder)  # only complete, verified files get the name
    paths = fetch(folder, url, quiet=True, use_default_mirrors=False, timeout=FAST, checksums=tiny.checksums)
    assert paths["train-images-idx3-ubyte"].read_bytes() == tiny.raw["train-images-idx3-ubyte"]


def test_the_real_data_tests_use_the_users_own_verified_cache(tiny_cache, tiny_checksums, tmp_path, monkeypatch):
    from conftest import _user_cache

    monkeypatch.setenv("MNIST_NN_DATA", str(tiny_cache))
    assert _user_cache() == tiny_cache
    (tiny_cache / "t10k-labels-idx1-ubyte").write_bytes(b"not the file")
    assert _user_cache() is None
    monkeypatch.setenv("MNIST_NN_DATA", str(tmp_path / "empty"))
    assert _user_cache() is None


def test_info_into_a_closed_pipe_is_quiet(tiny_cache):
    """`python -m mnist_nn.data info | head -1`: the closed pipe is not reported as a problem of the folder."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "mnist_nn.data", "info", "--data-dir", str(tiny_cache)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode in (0, 1)
