"""Reading a user's images into the 28x28 MNIST form (mnist_nn.images), as a hostile or unlucky user sends them.

Where correctness matters the oracle is the same digit given as a plain 8-bit PNG: an EXIF-rotated
JPEG, a 16-bit PNG, white ink on a transparent layer or a float TIFF must give the same 28x28 array.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_nn import images
from mnist_nn.errors import ImageError
from mnist_nn.network import Network

REPO = Path(__file__).resolve().parent.parent


def seven(size=(300, 400)) -> Image.Image:
    """A hand-drawn-looking 7 with a bar, dark on white: not symmetric under any flip or rotation."""
    sheet = Image.new("L", size, 255)
    draw = ImageDraw.Draw(sheet)
    w, h = size
    draw.line([(w * 0.25, h * 0.25), (w * 0.75, h * 0.25), (w * 0.45, h * 0.8)], fill=0, width=max(3, w // 12))
    draw.line([(w * 0.35, h * 0.5), (w * 0.65, h * 0.5)], fill=0, width=max(3, w // 14))
    return sheet


@pytest.fixture
def plain(tmp_path) -> np.ndarray:
    """The oracle: the 28x28 array of the 7 saved as an ordinary 8-bit grayscale PNG."""
    seven().save(tmp_path / "plain.png")
    return images.read_digit(tmp_path / "plain.png")


def run_predict(args, tmp_path, env=None, timeout=120):
    model = tmp_path / "model.npz"
    if not model.exists():
        Network((784, 16, 10), seed=0).save(model)
    return subprocess.run([sys.executable, "-m", "mnist_nn.predict", str(model), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --------------------------------------------------------------------------- no outside program, no blocking

def test_postscript_named_png_never_reaches_ghostscript(tmp_path):
    """Pillow hands PostScript to `gs`, whatever the file is called; a fake gs on PATH shows whether it ran."""
    marker = tmp_path / "gs-was-run"
    fake = tmp_path / "bin" / "gs"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    fake.chmod(0o755)
    postscript = tmp_path / "digit.png"
    postscript.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n"
                          "newpath 4 24 moveto 24 24 lineto 10 2 lineto 3 setlinewidth stroke showpage\n%%EOF\n")
    result = run_predict([postscript], tmp_path, env={"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"})
    assert not marker.exists(), "Ghostscript was started on a user's file"
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "digit.png" in line and "PNG, JPEG" in line and "whatever the file's name" in line


def test_fifo_and_device_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    result = run_predict([fifo, "/dev/zero"], tmp_path, timeout=60)  # the old code blocked for ever on the FIFO
    assert result.returncode == 1, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in result.stderr
    assert "fifo.png: is a FIFO (named pipe), not an image file" in errors[0]
    assert "/dev/zero: is a device, not an image file" in errors[1]


# --------------------------------------------------------------------------- what the pixels mean

def test_exif_orientation_is_applied(tmp_path, plain):
    """A phone stores the sensor's pixels and an orientation tag; 6 means 'turn 90 degrees clockwise to view'."""
    stored = seven().transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "sideways.png")
    assert np.abs(images.read_digit(tmp_path / "sideways.png") - plain).mean() > 0.1  # the test can tell
    np.testing.assert_allclose(images.read_digit(tmp_path / "phone.jpg"), plain, atol=0.03)


def test_16_bit_png_is_scaled_not_clipped(tmp_path, plain):
    # A scan's dark gray ink on light gray paper, as 16-bit values (every one above 255).
    pixels16 = (15_000 + np.asarray(seven(), dtype=np.uint32) * 150).astype(np.uint16)
    Image.fromarray(pixels16).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    np.testing.assert_allclose(images.read_digit(tmp_path / "deep.png"), plain, atol=1e-3)


def test_white_ink_on_a_transparent_background(tmp_path, plain):
    ink = 255 - np.asarray(seven())  # the stroke's opacity
    layer = np.dstack([np.full_like(ink, 255)] * 3 + [ink])  # white everywhere, visible only on the stroke
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    np.testing.assert_allclose(images.read_digit(tmp_path / "layer.png"), plain, atol=1e-3)
    dark = np.dstack([np.zeros_like(ink)] * 3 + [ink])  # and black ink on transparency, as before
    Image.fromarray(dark, "RGBA").save(tmp_path / "dark.png")
    np.testing.assert_allclose(images.read_digit(tmp_path / "dark.png"), plain, atol=1e-3)


def test_float_tiff_in_0_to_1(tmp_path, plain):
    Image.fromarray(np.asarray(seven(), dtype=np.float32) / 255, "F").save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    np.testing.assert_allclose(images.read_digit(tmp_path / "float.tif"), plain, atol=1e-3)


def test_bytes_give_the_same_digit_as_the_path(tmp_path, plain):
    """The library takes an upload's bytes as well as a path (the web playground will)."""
    np.testing.assert_array_equal(images.read_digit((tmp_path / "plain.png").read_bytes()), plain)
    with pytest.raises(ImageError, match="not an image this tool reads"):
        images.read_digit(b"%!PS-Adobe-3.0\n")


def test_animated_gif_says_its_first_frame_is_used(tmp_path, plain):
    frames = [seven().convert("P"), Image.new("P", (300, 400), 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    notes = []
    digit = images.read_digit(tmp_path / "anim.gif", notes)
    assert notes == ["an image of 2 frames: only the first is used"]
    np.testing.assert_allclose(digit, plain, atol=1e-3)


# --------------------------------------------------------------------------- hostile sizes and contents

def test_two_dots_far_apart_give_a_finite_digit():
    """Sparse ink on a big canvas used to vanish in the 20x20 resize and leave NaN for the centre of mass."""
    gray = np.zeros((2000, 2000), dtype=np.float32)
    gray[100, 100] = gray[1900, 1900] = 1
    digit = images.to_mnist(gray)
    assert np.isfinite(digit).all() and digit.max() == pytest.approx(1)


def png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None,
        idat_size: int = 65536) -> bytes:
    """A PNG written by hand, one IDAT chunk per ``idat_size`` bytes, so that it can be made too big or broken."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    if rows is None:  # all zero, compressed piecewise so no full image is ever held
        row = bytes(1 + (width * bit_depth + 7) // 8)
        packer = zlib.compressobj(9)
        rows = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    else:
        rows = zlib.compress(rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = [chunk(b"IDAT", rows[i:i + idat_size]) for i in range(0, len(rows), idat_size)]
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(idat) + chunk(b"IEND", b"")


def test_a_small_png_claiming_200_megapixels_is_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(14_200, 14_200, 1, 0))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageError, match="megapixels"):
        images.load_grayscale(bomb)


def test_broken_png_chunk_between_idat_chunks_is_one_image_error(tmp_path):
    width, height = 64, 2000
    rows = np.random.default_rng(0).integers(0, 256, (height, 1 + width), np.uint8)
    rows[:, 0] = 0  # each row's filter type: none
    good = png(width, height, 8, 0, rows.tobytes(), idat_size=4096)
    (tmp_path / "good.png").write_bytes(good)
    assert images.load_grayscale(tmp_path / "good.png").shape == (1000, 32)  # reduced by 2
    first_idat = good.index(b"IDAT") - 4
    length = struct.unpack(">I", good[first_idat:first_idat + 4])[0]
    after = first_idat + 12 + length
    broken = good[:after] + struct.pack(">I", 4) + b"\x00bad" + b"\xff" * 8 + good[after:]  # an invalid chunk type
    (tmp_path / "broken.png").write_bytes(broken)
    with pytest.raises(ImageError, match="broken or unreadable image file .*broken PNG"):
        images.load_grayscale(tmp_path / "broken.png")


MEMORY_PROBE = """
import resource, sys
from mnist_nn import images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    images.read_digit(sys.argv[1])
    outcome = "read"
except images.ImageError as exc:
    outcome = str(exc)
print(outcome)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)  # MiB
"""


def test_large_images_take_little_memory(tmp_path):
    """The decoded pixels once, then a working copy of at most 1024 pixels a side: no full-size floats.

    A 6000x6000 grayscale PNG is 36 MB of pixels (the old code made float64 copies of it: over 1 GB);
    a 12000x12000 one is refused before it is decoded.
    """
    sheet = Image.new("L", (6000, 6000), 255)
    sheet.paste(seven((1500, 2000)), (2000, 2000))
    sheet.save(tmp_path / "big.png")
    Image.new("L", (12000, 12000), 255).save(tmp_path / "huge.png")
    peaks = {}
    for name in ("big.png", "huge.png"):
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / name)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outcome, peak = result.stdout.splitlines()
        peaks[name] = (outcome, int(peak))
    assert peaks["big.png"][0] == "read" and peaks["big.png"][1] < 120, peaks
    assert "144 megapixels, more than the 40" in peaks["huge.png"][0] and peaks["huge.png"][1] < 20, peaks


def test_folder_listing_is_sorted_images_only(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", ".hidden.png", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in images.image_files(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
    assert json.dumps([str(p) for p in images.image_files(tmp_path)])
