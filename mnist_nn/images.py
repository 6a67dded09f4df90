"""Your own digit images in the 28x28 MNIST form: a path or the bytes of a file in, an array out.

A photo or drawing is made to look like MNIST the way the data set itself was made: grayscale, ink
bright on a dark background (light backgrounds are inverted), cropped to the ink, scaled so the digit
fits a 20x20 box keeping its aspect ratio, and placed in a 28x28 image so that its centre of mass is
at the centre.

The files are a user's, so they are read defensively:

* only the formats in :data:`FORMATS`, recognised by their content whatever their name (Pillow would
  otherwise hand a PostScript file to Ghostscript, an outside program that runs it);
* only regular files (a FIFO or a device would block or never end);
* at most :data:`MAX_FILE_BYTES` bytes and :data:`MAX_PIXELS` decoded pixels (a 25 KB PNG can claim
  200 megapixels), and a large image is brought down to :data:`WORKING_SIDE` pixels at once (a
  JPEG while it is decoded, others right after) so that no full-size float copy is ever made;
* what a picture means is kept: EXIF orientation, 16-bit and float pixels by their range,
  transparency composited onto a background that contrasts with the ink.

Every problem is an :class:`~mnist_nn.errors.ImageError` whose message says what is wrong (the
caller adds the file name).
"""

from __future__ import annotations

import math
import os
import stat
import struct
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np

from mnist_nn.errors import ImageError

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # Pillow's names; PPM reads PBM/PGM/PPM too
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP or PGM/PPM/PBM"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm")
MAX_FILE_BYTES = 100 * 2**20
MAX_PIXELS = 40_000_000  # decoded (a JPEG is decoded at 1/2..1/8 scale first, so larger photos pass)
WORKING_SIDE = 1024  # longer side a large image is reduced to before any float copy: ample for a 20x20 digit
INK_LEVEL = 0.2  # after stretching to [0, 1], pixels above this count as ink when cropping

# What Pillow's decoders raise on broken or hostile files besides OSError (it has no single type).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError,
                  TypeError, ZeroDivisionError)
_ORIENTATION = 0x0112  # the EXIF tag


def image_files(folder) -> list[Path]:
    """The image files in ``folder`` (by their extension, not hidden), sorted by name; not recursive."""
    folder = Path(folder)
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise ImageError(f"cannot list the folder ({exc.strerror})") from None
    return [folder / name for name in entries
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS]


def load_grayscale(source, notes: list[str] | None = None) -> np.ndarray:
    """The image in ``source`` (a path, or the bytes of a file) as a float32 array in [0, 1], 2-D,
    upright, at most :data:`WORKING_SIDE` pixels on its longer side.

    ``notes``, when given, receives a sentence for anything the user should know (an animated image:
    only its first frame is used). Raises :class:`ImageError`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(_too_big(len(source)))
        return _decode(BytesIO(source), notes)
    with _open_regular(source) as f:
        return _decode(f, notes)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Turn a grayscale image in [0, 1] into a 28x28 MNIST-style digit (float32 in [0, 1], ink bright).

    Raises :class:`ImageError` when there is no ink to find.
    """
    from PIL import Image

    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise ImageError("the image holds NaN or infinite pixel values")

    def border(image):
        return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])

    if np.median(border(gray)) > 0.5:  # dark ink on a light background: invert
        gray = 1 - gray
    background, top = np.median(border(gray)), gray.max()
    if top - background < 0.1:
        raise ImageError("no ink found (the image is blank or has no contrast)")
    ink = np.clip((gray - background) / (top - background), 0, 1)
    rows, cols = np.nonzero(ink > INK_LEVEL)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # Fit the longer side to 20 pixels, keeping the aspect ratio (as MNIST did); in float, so that
    # thin or sparse ink is blurred rather than rounded away.
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.clip(np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.LANCZOS)), 0, 1)
    peak = small.max()
    if not peak > 0:
        raise ImageError("no ink left after scaling the digit to 20x20 pixels")
    if peak < 1:  # a 1-pixel pen on a large canvas fades when scaled down; MNIST strokes reach full ink
        small = small / peak
    # Place it so the centre of mass lands on the centre of the 28x28 canvas.
    total = small.sum(dtype=np.float64)
    rows_idx, cols_idx = np.indices(small.shape)
    centre_row, centre_col = (rows_idx * small).sum() / total, (cols_idx * small).sum() / total
    top_row = int(np.clip(round(14 - centre_row), 0, 28 - small.shape[0]))
    left_col = int(np.clip(round(14 - centre_col), 0, 28 - small.shape[1]))
    canvas = np.zeros((28, 28), dtype=np.float32)
    canvas[top_row:top_row + small.shape[0], left_col:left_col + small.shape[1]] = small
    return canvas


def read_digit(source, notes: list[str] | None = None) -> np.ndarray:
    """``to_mnist(load_grayscale(source))``: the 28x28 digit a model sees for an image file or its bytes."""
    return to_mnist(load_grayscale(source, notes))


# --------------------------------------------------------------------------- reading

def _too_big(size: int) -> str:
    return (f"the file is {size / 2**20:.0f} MiB, more than the {MAX_FILE_BYTES // 2**20} MiB an image of a "
            f"digit needs; make it smaller")


def _open_regular(path):
    """``path`` opened for reading if it is a regular file of a sane size; never blocks on a FIFO."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror})") from None
    _check_regular(info)
    try:
        # O_NONBLOCK: if the name was swapped for a FIFO since the stat, opening it still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        _check_regular(info)
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(_too_big(info.st_size))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(info: os.stat_result) -> None:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise ImageError(f"is {kind}, not an image file")


def _decode(f, notes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    # Pillow warns (on stderr) about large images, odd EXIF or MPO data; the limits here are stricter
    # and every refusal is an ImageError, so its warnings would only be noise around the one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(f, formats=FORMATS) as image:
                return _grayscale(image, notes)
        except ImageError:  # (a ValueError too) already says what is wrong
            raise
        except UnidentifiedImageError:
            raise ImageError(f"not an image this tool reads: the content is not {FORMAT_NAMES} (whatever the "
                             f"file's name says); convert it to PNG") from None
        except Image.DecompressionBombError:
            raise ImageError(f"the image claims far more than the {MAX_PIXELS // 10**6} megapixels this tool "
                             f"reads; scale it down") from None
        except MemoryError:
            raise ImageError("not enough memory to decode the image; scale it down") from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"a broken or unreadable image file ({exc.__class__.__name__}: {exc})") from None


def _grayscale(image, notes) -> np.ndarray:
    from PIL import Image

    if getattr(image, "is_animated", False):
        if notes is not None:
            notes.append(f"an image of {getattr(image, 'n_frames', 'several')} frames: only the first is used")
        image.seek(0)
    width, height = image.size
    if image.format in ("JPEG", "MPO") and max(width, height) > WORKING_SIDE:
        # Decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling): the full image never exists.
        image.draft("L" if image.mode in ("L", "RGB") else None, (WORKING_SIDE, WORKING_SIDE))
    if image.size[0] * image.size[1] > MAX_PIXELS:
        raise ImageError(f"{width}x{height} pixels is {width * height / 10**6:.0f} megapixels, more than the "
                         f"{MAX_PIXELS // 10**6} this tool reads; scale it down (a digit needs far fewer)")
    orientation = image.getexif().get(_ORIENTATION, 1)
    image.load()
    sixteen_bit = image.mode.startswith("I;16")
    image = _reducible(image)
    factor = math.ceil(max(image.size) / WORKING_SIDE)
    if factor > 1:
        image = image.reduce(factor)  # box averages: cheap, and never brighter or darker than the ink
    transpose = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}.get(orientation)  # ImageOps' table
    if transpose is not None:
        image = image.transpose(transpose)
    if image.mode == "LA":
        return _composite(np.asarray(image, dtype=np.float32) / 255)
    if image.mode in ("I", "F"):
        return _by_range(np.asarray(image), 65535.0 if sixteen_bit else None)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def _reducible(image):
    """``image`` in one of the modes the rest works in: L, LA (any transparency), I (16-bit) or F."""
    mode = image.mode
    transparent = "A" in mode or "a" in mode or "transparency" in image.info
    if mode.startswith("I;16"):
        return image.convert("I")
    if mode in ("I", "F", "L"):
        return image
    if transparent:
        return (image.convert("RGBA") if mode in ("P", "PA", "L", "RGB") else image).convert("LA")
    return image.convert("L")


def _composite(gray_alpha: np.ndarray) -> np.ndarray:
    """Gray and alpha composited onto a background that contrasts with the ink: white for dark ink (a
    pen on transparent paper), black for light ink (white strokes drawn on a transparent layer)."""
    gray, alpha = gray_alpha[..., 0], gray_alpha[..., 1]
    if alpha.min() >= 1:
        return gray
    weight = alpha.sum(dtype=np.float64)
    ink_brightness = (gray * alpha).sum(dtype=np.float64) / weight if weight > 0 else 0.0
    background = 0.0 if ink_brightness > 0.5 else 1.0
    return gray * alpha + background * (1 - alpha)


def _by_range(pixels: np.ndarray, full_scale: float | None) -> np.ndarray:
    """16-bit, 32-bit or float pixels in [0, 1]: divided by ``full_scale`` (65535 for a 16-bit image),
    else by the range their values use; never clipped."""
    pixels = pixels.astype(np.float32)
    if full_scale is not None:
        return pixels / full_scale
    if not np.isfinite(pixels).all():
        raise ImageError("the image holds NaN or infinite pixel values")
    low, high = float(pixels.min()), float(pixels.max())
    for full_scale in (1.0, 255.0, 65535.0):  # float in 0..1, 8-bit or 16-bit values
        if low >= 0 and high <= full_scale:
            return pixels / full_scale
    if high == low:
        return np.zeros_like(pixels)
    return (pixels - low) / (high - low)  # any other range: its own extremes are black and white
