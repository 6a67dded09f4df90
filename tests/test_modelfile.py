"""Model files under attack (issue 11, items 6, 9, 12, 13, 28): every hostile file is built here, byte
by byte where numpy would not write it, and must be refused with one ModelFileError naming the file,
before anything large is read. Memory bounds are checked in a subprocess whose address space is
limited to 1 GiB: a genuine model loads there, and each attack must be refused there (the old loader
ran out of memory on each of them, allocating what the file declared)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.network import ModelFileError, Network

REPO = Path(__file__).resolve().parent.parent


def npy_header(shape, descr="<f8") -> bytes:
    """An .npy version 1.0 header as numpy writes it, for any shape and dtype description."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def genuine(tmp_path, sizes=None, **meta_changes):
    """(metadata, {member: .npy bytes}) of a genuine 4-3-2 model, metadata changed as asked (``sizes``
    too, without building a network that large: the arrays stay 4-3-2's)."""
    net = Network((4, 3, 2), seed=0)
    net.metadata = {"training": {"validation_size": 100, "batch_size": 10}, "test_accuracy": 0.5}
    meta = {**net.to_metadata(), **meta_changes}
    if sizes is not None:
        meta["sizes"] = list(sizes)
    members = {f"w{l}.npy": npy(w) for l, w in enumerate(net.weights)}
    members.update({f"b{l}.npy": npy(b) for l, b in enumerate(net.biases)})
    return meta, members


def write_model(path, meta, members, metadata_text=None, compress=zipfile.ZIP_STORED) -> Path:
    """A zip of ``members`` plus the metadata (``meta`` as JSON, or ``metadata_text`` verbatim)."""
    text = json.dumps(meta) if metadata_text is None else metadata_text
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if "metadata.npy" not in members:
            zf.writestr("metadata.npy", npy(np.array(text)))
    return Path(path)


def lying_member(path, meta, members, name, header: bytes, declared: int) -> Path:
    """The model with member ``name``: ``header`` and 1 MiB of zeros, deflated (a few KB), its zip entries
    declaring ``declared`` bytes unpacked: what a small file with a huge compressed array looks like."""
    members = {**members, name: header + bytes(1 << 20)}
    write_model(path, meta, members, compress=zipfile.ZIP_DEFLATED)
    data = bytearray(Path(path).read_bytes())
    encoded = name.encode()
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = 0
        while (at := data.find(signature, at)) >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(encoded)] == encoded:
                struct.pack_into("<L", data, at + size_at, declared)
            at += 4
    Path(path).write_bytes(bytes(data))
    return Path(path)


def refused(path, *words) -> str:
    with pytest.raises(ModelFileError) as info:
        Network.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


# A genuine model first (the limit leaves room for one), then the file under test.
LIMITED = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from mnist_nn.network import ModelFileError, Network
    Network.load(sys.argv[1])
    try:
        Network.load(sys.argv[2])
    except ModelFileError as exc:
        print("REFUSED:", exc)
    else:
        print("LOADED")
""")


def load_limited(good, hostile) -> str:
    """The load of ``hostile`` in a subprocess limited to 1 GiB of address space: its one line of output."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", LIMITED, str(good), str(hostile)], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=120)  # a guard against a hang, not a timing
    assert result.returncode == 0 and result.stdout.startswith("REFUSED:"), result.stdout + result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def good(tmp_path):
    net = Network((784, 30, 10), seed=0)
    return net.save(tmp_path / "good.npz")


# --------------------------------------------------------------------------- item 6: small files, huge allocations

def test_huge_compressed_member_is_refused_before_it_is_read(tmp_path, good):
    # The 3.2 MB file: sizes 784-1000000-10 (float32, 3.1 GB of weights) and a w0 that unpacks
    # to that from a few MB. No trained weights compress like that.
    meta, members = genuine(tmp_path, sizes=(784, 1_000_000, 10), dtype="float32")
    members = {k: v for k, v in members.items() if k.startswith("b")}  # no need to build w0 or w1 for real
    for name, shape in (("w0.npy", (1_000_000, 784)), ("w1.npy", (10, 1_000_000))):
        members[name] = npy_header(shape, "<f4")
    header = npy_header((1_000_000, 784), "<f4")
    path = lying_member(tmp_path / "bomb.npz", meta, members, "w0.npy", header, len(header) + 784_000_000 * 4)
    assert path.stat().st_size < 8 << 20
    assert "w0" in load_limited(good, path)


def test_member_larger_than_its_shape_is_refused(tmp_path, good):
    meta, members = genuine(tmp_path, sizes=(784, 30, 10))
    header = npy_header((750_000_000,), "<f4")  # 3 GiB declared where 784x30 is needed
    path = lying_member(tmp_path / "big.npz", meta, members, "w0.npy", header, len(header) + 3 * 2**30)
    out = load_limited(good, path)
    assert "w0" in out and "declares" in out


def test_sizes_without_arrays_are_refused_before_allocating(tmp_path, good):
    # 1.7 KB: the old loader built a 784-500000-10 network (4.6 GB) before finding w0 missing.
    meta, _ = genuine(tmp_path, sizes=(784, 500_000, 10))
    path = write_model(tmp_path / "empty.npz", meta, {})
    assert path.stat().st_size < 8192
    assert "w0 is missing" in load_limited(good, path)


def test_sizes_over_the_parameter_limit_name_the_memory(tmp_path, good):
    meta, _ = genuine(tmp_path, sizes=(784, 3_000_000, 10))
    path = write_model(tmp_path / "huge.npz", meta, {})
    out = load_limited(good, path)
    assert "2,385,000,010 parameters" in out and "GiB" in out and "800,000,000" in out


def test_huge_metadata_string_is_refused_unread(tmp_path, good):
    # The 300M-character metadata in a 1.26 MB file: declared as such, deflated from a little.
    meta, members = genuine(tmp_path)
    header = npy_header((), "<U300000000")
    path = lying_member(tmp_path / "meta.npz", meta, members, "metadata.npy", header, len(header) + 1_200_000_000)
    assert "metadata" in load_limited(good, path)


def test_zip_directory_bomb_is_refused(tmp_path):
    # 70,000 members listed in 3.6 MB: zipfile alone would build 70,000 objects from it.
    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0) + b"a0.npy"
    directory = entry * 70_000
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), 0, 0)
    path = tmp_path / "many.npz"
    path.write_bytes(directory + end)
    refused(path, "members")


# --------------------------------------------------------------------------- item 12: malformed models

@pytest.mark.parametrize("key, value, word", [
    ("format_version", "abc", "format_version"), ("format_version", None, "format_version"),
    ("format_version", "1e999", "format_version"), ("epochs_trained", "abc", "epochs_trained"),
    ("epochs_trained", None, "epochs_trained"), ("epochs_trained", -1, "epochs_trained"),
    ("rng_state", "garbage", "rng_state"), ("rng_state", np.random.PCG64DXSM(0).state, "rng_state"),
    ("rng_state", {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}, "rng_state"),
    ("sizes", [4, "Infinity", 2], "sizes"), ("sizes", [4, -3, 2], "sizes"), ("sizes", [4, True, 2], "sizes"),
    ("sizes", [4, 3.0, 2], "sizes"), ("sizes", "NaN", "sizes"), ("seed", -5, "seed"), ("dtype", "int8", "dtype"),
])
def test_malformed_metadata_is_refused(tmp_path, key, value, word):
    meta, members = genuine(tmp_path)
    text = json.dumps({**meta, key: "@@"}).replace('"@@"', value if value in ("Infinity", "NaN", "1e999")
                                                   else json.dumps(value))
    text = text.replace('"Infinity"', "Infinity")
    path = write_model(tmp_path / "bad.npz", None, members, metadata_text=text)
    refused(path, word)


@pytest.mark.parametrize("array", [
    np.full((3, 4), "abc"), np.zeros((3, 4), dtype=[("a", "<f4"), ("b", "<f4")]), np.zeros((3, 4), complex),
    np.zeros((3, 4), np.int64), np.zeros((3, 4), np.bool_),
])
def test_weights_that_are_not_floats_are_refused(tmp_path, array):
    meta, members = genuine(tmp_path)
    path = write_model(tmp_path / "w.npz", meta, {**members, "w0.npy": npy(array)})
    refused(path, "w0")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(tmp_path, value):
    meta, members = genuine(tmp_path)
    w = np.zeros((3, 4))
    w[1, 2] = value
    refused(write_model(tmp_path / "nan.npz", meta, {**members, "w0.npy": npy(w)}), "w0", "NaN or infinite")


def test_declared_shape_of_2_to_the_40_is_refused(tmp_path):
    meta, members = genuine(tmp_path)
    path = write_model(tmp_path / "shape.npz", meta, {**members, "w0.npy": npy_header((2**40,)) + bytes(96)})
    refused(path, "w0")
    meta, _ = genuine(tmp_path, sizes=(4, 2**40, 2))
    refused(write_model(tmp_path / "sizes.npz", meta, {}), "sizes")


def test_deeply_nested_metadata_is_refused(tmp_path):
    meta, members = genuine(tmp_path)
    for depth in (200_000, 100):
        text = json.dumps({**meta, "x": "@@"}).replace('"@@"', "[" * depth + "]" * depth)
        refused(write_model(tmp_path / f"deep{depth}.npz", None, members, metadata_text=text), "metadata")


def test_plain_npy_and_other_files_are_named_without_numpy_advice(tmp_path):
    """Item 28 and 12: no file may bring numpy's "allow_pickle" advice, which the user must not follow."""
    np.save(tmp_path / "array.npy", np.zeros((3, 4)))
    (tmp_path / "model.npy").write_bytes((tmp_path / "array.npy").read_bytes())
    (tmp_path / "text.npz").write_text("this is not a model\n")
    (tmp_path / "pickle.npz").write_bytes(b"\x80\x04\x95" + bytes(40))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes(Network((4, 3, 2)).save(tmp_path / "whole.npz").read_bytes()[:-30])
    for name, word in (("model.npy", ".npy"), ("text.npz", "not a zip"), ("pickle.npz", "pickle"),
                       ("empty.npz", "empty"), ("cut.npz", "zip")):
        message = refused(tmp_path / name, word)
        assert "allow_pickle" not in message and "unsafe" not in message, message


def test_zip_with_foreign_or_doubled_members_is_refused(tmp_path):
    meta, members = genuine(tmp_path)
    refused(write_model(tmp_path / "extra.npz", meta, {**members, "evil.py": b"print(1)"}), "evil.py")
    refused(write_model(tmp_path / "w9.npz", meta, {**members, "w9.npy": npy(np.zeros(2))}), "w9")
    path = write_model(tmp_path / "twice.npz", meta, members)
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as zf:
        zf.writestr("w0.npy", npy(np.zeros((3, 4))))
    refused(path, "twice")


# --------------------------------------------------------------------------- item 13: odd metadata, models that do not fit

@pytest.mark.parametrize("training, word", [
    ("x", "training"), ([1, 2], "training"), ({"validation_size": 70_000}, "validation_size"),
    ({"validation_size": "x"}, "validation_size"), ({"validation_size": 1.5}, "validation_size"),
    ({"batch_size": 0}, "batch_size"), ({"lr": "abc"}, "lr"), ({"hidden": 5}, "hidden"),
    ({"backend": "gpu"}, "backend"),
])
def test_odd_training_metadata_is_refused(tmp_path, training, word):
    meta, members = genuine(tmp_path, training=training)
    refused(write_model(tmp_path / "odd.npz", meta, members), word)


def test_test_accuracy_must_be_a_fraction(tmp_path):
    meta, members = genuine(tmp_path, test_accuracy="high")
    refused(write_model(tmp_path / "acc.npz", meta, members), "test_accuracy")


def test_check_model_fits_names_the_size_that_does_not_fit(tmp_path):
    from mnist_nn.modelfile import check_model_fits

    check_model_fits(Network((784, 30, 10)), "m.npz")
    with pytest.raises(ModelFileError, match=r"m\.npz: the model takes 100 inputs, but an MNIST image has 784"):
        check_model_fits(Network((100, 30, 10)), "m.npz")
    with pytest.raises(ModelFileError, match=r"m\.npz: the model has 5 outputs, but MNIST has 10 digits"):
        check_model_fits(Network((784, 30, 5)), "m.npz")


# --------------------------------------------------------------------------- items 9 and 28: not a regular file

def test_fifo_and_devices_are_refused_unopened(tmp_path, good):
    """A FIFO would block any reader for ever and /dev/zero never ends: both are named for what they are
    (not "no such model file"), in a subprocess so a regression hangs only it."""
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    link = tmp_path / "zero.npz"
    link.symlink_to("/dev/zero")
    folder = tmp_path / "run"
    folder.mkdir()
    os.mkfifo(folder / "model.npz")
    for path, word in ((fifo, "FIFO"), (Path("/dev/zero"), "device"), (link, "device"), (folder, "FIFO")):
        out = load_limited(good, path)
        assert word in out and "no such" not in out, out


def test_missing_file_and_unreadable_file(tmp_path):
    refused(tmp_path / "nope.npz", "no such model file")
    if os.geteuid() != 0:  # root reads anything
        path = Network((4, 3, 2)).save(tmp_path / "locked.npz")
        path.chmod(0)
        refused(path, "cannot be read")


# --------------------------------------------------------------------------- what still loads

def old_save(net, path):
    """``Network.save`` as mnist_nn 0.1.0 wrote it (commit 2a525c5), kept to prove old files still load."""
    arrays = {f"w{l}": w for l, w in enumerate(net.weights)}
    arrays.update({f"b{l}": b for l, b in enumerate(net.biases)})
    metadata = {"format": "mnist_nn.model", "format_version": 1, "sizes": list(net.sizes),
                "activation": net.activation.name, "cost": net.cost_function.name, "init": net.init,
                "dtype": net.dtype.name, "seed": net.seed, "epochs_trained": net.epochs_trained,
                "rng_state": net.rng.bit_generator.state, **net.metadata}
    arrays["metadata"] = np.array(json.dumps(metadata))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_old_model_files_still_load(tmp_path, dtype):
    net = Network((784, 16, 10), cost="cross-entropy", init="scaled", seed=3, dtype=dtype)
    net.epochs_trained = 4
    net.rng.permutation(5)
    net.metadata = {"training": {"batch_size": 10, "lr": 0.5, "hidden": [16], "activation": "sigmoid",
                                 "cost": "cross-entropy", "init": "scaled", "l2": 0.0, "seed": 3, "dtype": "float32",
                                 "validation_size": 10000, "backend": "jit"},
                    "test_accuracy": 0.9, "validation_accuracy": None}
    loaded = Network.load(old_save(net, tmp_path / "old.npz"))
    assert repr(loaded) == repr(net) and loaded.epochs_trained == 4 and loaded.metadata == net.metadata
    for a, b in zip(loaded.weights + loaded.biases, net.weights + net.biases):
        assert a.dtype == dtype and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
    assert loaded.rng.permutation(10).tolist() == net.rng.permutation(10).tolist()
    # What this mnist_nn writes, the loader of the old one read: the same members and metadata.
    with np.load(loaded.save(tmp_path / "new.npz"), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["b0", "b1", "metadata", "w0", "w1"]
        assert json.loads(str(npz["metadata"]))["format"] == "mnist_nn.model"


def test_compressed_and_big_endian_models_load(tmp_path):
    meta, members = genuine(tmp_path)
    net = Network((4, 3, 2), seed=0)
    members["w0.npy"] = npy(net.weights[0].astype(">f8"))
    members["w1.npy"] = npy(np.asfortranarray(net.weights[1]))
    loaded = Network.load(write_model(tmp_path / "c.npz", meta, members, compress=zipfile.ZIP_DEFLATED))
    for a, b in zip(loaded.weights, net.weights):
        np.testing.assert_array_equal(a, b)


def test_oversized_metadata_is_refused_at_save(tmp_path):
    net = Network((4, 3, 2))
    net.metadata = {"notes": "x" * 300_000}
    with pytest.raises(ModelFileError, match="metadata"):
        net.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []
