"""Hostile and unlucky data sources: bombs, endless and slow bodies, FIFOs, read-only and full caches,
bad flags, secrets in URLs, Ctrl-C. Each is bounded by what a genuine file needs, and ends in one line."""

from __future__ import annotations

import errno
import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest

from mnist_nn import data as mnist_data
from mnist_nn.data import MnistDownloadError, MnistFormatError, fetch, load_mnist, parse_idx

FAST = (2.0, 1.0)


@contextmanager
def file_size_limit(limit: int):
    """No file this process writes may pass ``limit`` bytes (a write past it fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def fetch_from(urls, folder, **kwargs):
    return fetch(folder, urls, quiet=True, use_default_mirrors=False, timeout=FAST, **kwargs)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fault, reason", [("bomb", "unpacks to more than the 470416 bytes"),
                                           ("endless", "sent more than")])
def test_a_bomb_or_an_endless_body_is_cut_at_the_genuine_size(fault, reason, tiny, tiny_checksums, server, tmp_path):
    url = server.add("m1", tiny.gz)
    server.mirrors["m1"].faults["train-images-idx3-ubyte.gz"] = [fault]
    folder = tmp_path / "cache"
    with file_size_limit(8 << 20), pytest.raises(MnistDownloadError) as info:  # 17x the genuine 470 KB
        fetch_from(url, folder)
    assert reason in str(info.value) and "File too large" not in str(info.value)
    assert leftovers(folder) == []


def test_a_file_mirror_of_symlinks_to_dev_zero_is_refused_unread(tiny, tiny_checksums, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in tiny.gz:
        (source / f"{name}.gz").symlink_to("/dev/zero")
    with file_size_limit(8 << 20), pytest.raises(MnistDownloadError, match="not a regular file"):
        fetch_from(source.as_uri(), tmp_path / "cache")


def test_a_slowloris_mirror_is_given_up_for_the_next(tiny, tiny_checksums, server, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_data.download, "DEADLINE_BASE_S", 0.5)
    monkeypatch.setattr(mnist_data.download, "MIN_RATE", 1 << 30)
    first, second = server.add("m1", tiny.gz), server.add("m2", tiny.gz)
    server.trickle_s, server.trickle_total_s = 0.05, 20.0  # a byte well inside the 1 s read timeout
    server.mirrors["m1"].faults["train-labels-idx1-ubyte.gz"] = ["trickle"]
    paths = fetch_from([first, second], tmp_path / "cache")
    assert paths["train-labels-idx1-ubyte"].read_bytes() == tiny.raw["train-labels-idx1-ubyte"]
    assert server.mirrors["m2"].requests == ["train-labels-idx1-ubyte.gz"]


def test_a_mirror_sending_its_headers_a_byte_at_a_time_is_given_up_for_the_next(tiny, tiny_checksums, server,
                                                                                 tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_data.download, "DEADLINE_BASE_S", 0.5)
    monkeypatch.setattr(mnist_data.download, "MIN_RATE", 1 << 30)
    first, second = server.add("m1", tiny.gz), server.add("m2", tiny.gz)
    server.trickle_s, server.trickle_total_s = 0.05, 60.0  # each byte well inside the 1 s read timeout
    server.mirrors["m1"].faults["train-labels-idx1-ubyte.gz"] = ["slow_headers"]
    paths = fetch_from([first, second], tmp_path / "cache")
    assert not server.slow_headers_ended  # given up on while the first mirror was still sending headers
    assert paths["train-labels-idx1-ubyte"].read_bytes() == tiny.raw["train-labels-idx1-ubyte"]
    assert server.mirrors["m2"].requests == ["train-labels-idx1-ubyte.gz"]


def test_temporaries_of_dead_downloads_are_removed_live_ones_kept(tiny, tiny_checksums, server, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (folder / f".download-{dead_pid}-abc").mkdir()
    (folder / f".download-{dead_pid}-abc" / "train-images-idx3-ubyte").write_bytes(bytes(1 << 20))
    (folder / f".download-{os.getpid()}-live").mkdir()
    fetch_from(server.add("m1", tiny.gz), folder)
    assert leftovers(folder) == [f".download-{os.getpid()}-live"]


def test_a_full_disk_during_a_download_is_one_error_naming_the_folder(tiny, tiny_checksums, server, tmp_path):
    first, second = server.add("m1", tiny.gz), server.add("m2", tiny.gz)
    folder = tmp_path / "cache"
    with file_size_limit(100_000), pytest.raises(MnistDownloadError) as info:  # train images: 470 KB
        fetch_from([first, second], folder)
    assert f"cannot write train-images-idx3-ubyte into the data folder {folder}" in str(info.value)
    assert "train-images-idx3-ubyte.gz" not in server.mirrors["m2"].requests  # no mirror can help
    assert leftovers(folder) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_a_cache_that_cannot_take_stamps_still_loads_and_says_so_once(code, tiny, tiny_checksums, tmp_path,
                                                                       monkeypatch, capsys):
    folder = tiny.write(tmp_path / "cache", compressed=False)
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.samefile(dir, folder):
            raise OSError(code, os.strerror(code))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    for _ in range(2):
        data = load_mnist(folder, validation_size=100, download=False)
        assert data.test.labels.tolist() == tiny.arrays["t10k-labels-idx1-ubyte"].tolist()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and os.strerror(code) in err and str(folder) in err
    assert not [p for p in folder.iterdir() if p.name.endswith(".verified")]


def run_data_cli(*args, env=None, timeout=60):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})}

    def limited():  # an unbounded read would fail here, not take the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))
    return subprocess.run([sys.executable, "-m", "mnist_nn.data", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=limited)


def test_a_stamp_that_is_a_fifo_or_dev_zero_is_ignored_not_read(tiny_cache):
    os.unlink(tiny_cache / "train-images-idx3-ubyte.verified")
    os.mkfifo(tiny_cache / "train-images-idx3-ubyte.verified")
    os.unlink(tiny_cache / "t10k-images-idx3-ubyte.verified")
    os.symlink("/dev/zero", tiny_cache / "t10k-images-idx3-ubyte.verified")
    result = run_data_cli("info", "--data-dir", str(tiny_cache), timeout=30)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:5]}
    # Without their stamps the tiny files are hashed, and they are not the canonical MNIST.
    assert "CORRUPT" in lines["train-images-idx3-ubyte"] and "CORRUPT" in lines["t10k-images-idx3-ubyte"]
    assert " verified " in lines["train-labels-idx1-ubyte"]


def test_parse_idx_of_a_gzip_bomb_stops_at_the_largest_genuine_size(tmp_path):
    path = tmp_path / "bomb-images.gz"
    header = (2051).to_bytes(4, "big") + (400_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        for _ in range(300):  # 300 MiB of zeros in ~300 KB
            f.write(bytes(1 << 20))
    code = ("import resource, sys; from mnist_nn.data import parse_idx, MnistFormatError\n"
            "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (200 << 20), resource.RLIM_INFINITY))\n"
            "try:\n    parse_idx(sys.argv[1], 'images')\nexcept MnistFormatError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-500:]
    assert "unpacks to more than 47040016 bytes" in result.stdout


def test_parse_idx_refuses_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(MnistFormatError, match="not a regular file"):
        parse_idx(tmp_path / "fifo", "labels")


@pytest.mark.parametrize("args, env, expected", [
    (["download", "--mirror", "http://[::1"], {}, "is not a valid URL"),
    (["download"], {"MNIST_NN_MIRROR": "http://[::1"}, "is not a valid URL"),
    (["info"], {"MNIST_NN_DATA": "~nosuchuser/x"}, "MNIST_NN_DATA '~nosuchuser/x': cannot find that home folder"),
    (["download", "--data-dir", "~nosuchuser/x"], {}, "--data-dir '~nosuchuser/x'"),
    (["info", "--data-dir", "d" * 300], {}, "File name too long"),
    (["download", "--offline", "--data-dir", "d" * 300], {}, "File name too long"),
])
def test_bad_folders_and_mirrors_are_one_line(args, env, expected, tmp_path):
    result = run_data_cli(*args, env={"MNIST_NN_DATA": str(tmp_path / "cache"), **env})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


def test_a_mirror_password_is_never_echoed(tiny, tiny_checksums, server, tmp_path):
    url = server.add("m1", tiny.gz).replace("http://", "http://user:s3cret@")
    server.mirrors["m1"].faults["t10k-labels-idx1-ubyte.gz"] = ["404"] * 5
    with pytest.raises(MnistDownloadError) as info:
        fetch_from(url, tmp_path / "cache")
    assert "s3cret" not in str(info.value) and "user:***@127.0.0.1" in str(info.value)
    with pytest.raises(MnistDownloadError) as info:
        mnist_data.mirror_list("ftp://user:s3cret@example.org/mnist/")
    assert "s3cret" not in str(info.value)


def test_a_plain_folder_is_accepted_as_a_mirror(tiny, tiny_checksums, tmp_path, monkeypatch):
    source = tiny.write(tmp_path / "source")
    monkeypatch.chdir(tmp_path)
    paths = fetch(tmp_path / "cache", "source", quiet=True, use_default_mirrors=False)
    assert paths["t10k-images-idx3-ubyte"].read_bytes() == tiny.raw["t10k-images-idx3-ubyte"]
    assert mnist_data.mirror_list(str(source), defaults=False) == [source.as_uri() + "/"]
    with pytest.raises(MnistDownloadError, match="neither a URL nor a folder"):
        mnist_data.mirror_list(str(tmp_path / "nowhere"))


def default_signals():
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def test_ctrl_c_during_a_download_is_one_line_130_and_leaves_nothing(tiny_cache, server, tiny, tmp_path):
    url = server.add("m1", tiny.gz)
    server.mirrors["m1"].faults["t10k-images-idx3-ubyte.gz"] = ["hang"]
    folder = tmp_path / "fresh"
    # The real command line, with the tiny files' checksums in place of MNIST's and no default mirrors.
    code = ("import json, sys\n"
            "from mnist_nn.cli import finish, run_command\n"
            "from mnist_nn.data import cache, download\n"
            "from mnist_nn.data.__main__ import main\n"
            "cache.CHECKSUMS.clear(); cache.CHECKSUMS.update(json.loads(sys.argv[1]))\n"
            "download.DEFAULT_MIRRORS = ()\n"
            "finish(run_command(main, sys.argv[2:], prog='python -m mnist_nn.data'))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(tiny.checksums), "download", "--data-dir",
                             str(folder), "--mirror", url, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 60
        while "t10k-images-idx3-ubyte.gz" not in server.mirrors["m1"].requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # half the file has arrived
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and err.strip() == "interrupted", err
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.startswith("t10k-images")]


def test_a_fifo_in_place_of_a_data_file_is_named_for_what_it_is(tiny, tiny_checksums, tiny_cache, server, tmp_path):
    """Never opened (it would block), and not reported as missing: named as a FIFO; a download replaces it."""
    name = "t10k-labels-idx1-ubyte"
    (tiny_cache / name).unlink()
    (tiny_cache / f"{name}.verified").unlink(missing_ok=True)
    os.mkfifo(tiny_cache / name)
    with pytest.raises(MnistDownloadError, match=f"{name} is a FIFO .named pipe., not a data file"):
        fetch(tiny_cache, quiet=True, offline=True)
    info = subprocess.run([sys.executable, "-m", "mnist_nn.data", "info", "--data-dir", str(tiny_cache)],
                          capture_output=True, text=True, timeout=120)
    assert f"missing: {name} is a FIFO (named pipe), not a data file" in info.stdout, info.stdout
    paths = fetch_from(server.add("m1", tiny.gz), tiny_cache)
    assert paths[name].read_bytes() == tiny.raw[name]
